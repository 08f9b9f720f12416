"""The Python SDK: :class:`~lepton.sdk.client.LeptonClient` and the request builders."""
