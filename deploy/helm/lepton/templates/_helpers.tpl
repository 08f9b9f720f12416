{{/* The release's name, cut to what a Kubernetes name allows. */}}
{{- define "lepton.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries; "component" is the service. */}}
{{- define "lepton.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "lepton.selectorLabels" . }}
{{- end -}}

{{/* What a workload selects its pods by. */}}
{{- define "lepton.selectorLabels" -}}
app.kubernetes.io/name: lepton
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/part-of: lepton
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "lepton.image" -}}
{{ printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end -}}

{{- define "lepton.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ default (include "lepton.fullname" .) .Values.serviceAccount.name }}
{{- else -}}
{{ default "default" .Values.serviceAccount.name }}
{{- end -}}
{{- end -}}

{{/* A pod's annotations: its configuration's checksum (a change rolls the pods) and
     where Prometheus scrapes it. */}}
{{- define "lepton.podAnnotations" -}}
checksum/config: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
{{- if .root.Values.metrics.annotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics/
{{- end }}
{{- end -}}

{{/* An env entry from the credentials Secret. */}}
{{- define "lepton.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .root.Values.credentials.secretName }}
      key: {{ .key }}
{{- end -}}

{{/* The Kafka principal and database login of a service (trainer included). */}}
{{- define "lepton.serviceCredentials" -}}
- name: LEPTON_KAFKA_SASL_USERNAME
  value: {{ .user | quote }}
{{ include "lepton.secretEnv" (dict "root" .root "name" "LEPTON_KAFKA_SASL_PASSWORD" "key" (printf "%s-kafka-password" .service)) }}
{{ include "lepton.secretEnv" (dict "root" .root "name" "LEPTON_DATABASE_URL" "key" (printf "%s-database-url" .service)) }}
{{- end -}}

{{/* The container's probes: started and live on /livez, ready on /healthz. */}}
{{- define "lepton.probes" -}}
startupProbe:
  httpGet: {path: /livez, port: health}
  periodSeconds: 5
  failureThreshold: {{ div .Values.health.startupSeconds 5 }}
livenessProbe:
  httpGet: {path: /livez, port: health}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /healthz, port: health}
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 2
{{- end -}}

{{/* Volumes every pod has: /tmp (the root file system is read-only), the Kafka CA. */}}
{{- define "lepton.volumes" -}}
- name: tmp
  emptyDir: {}
{{- if .Values.kafka.caCertificate.secretName }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.caCertificate.secretName }}
    items:
      - {key: {{ .Values.kafka.caCertificate.key }}, path: ca.pem}
{{- end }}
{{- end -}}

{{- define "lepton.volumeMounts" -}}
- {name: tmp, mountPath: /tmp}
{{- if .Values.kafka.caCertificate.secretName }}
- {name: kafka-ca, mountPath: /etc/lepton/kafka, readOnly: true}
{{- end }}
{{- end -}}

{{- define "lepton.artifactVolume" -}}
{{- if .Values.artifacts.existingClaim -}}
- name: artifacts
  persistentVolumeClaim:
    claimName: {{ .Values.artifacts.existingClaim }}
{{- end }}
{{- end -}}

{{- define "lepton.artifactMount" -}}
{{- if .Values.artifacts.existingClaim -}}
- {name: artifacts, mountPath: {{ .Values.artifacts.mountPath }}}
{{- end }}
{{- end -}}
