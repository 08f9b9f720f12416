-- One row per singleton service: its leader term grows by one at every takeover.
CREATE TABLE lepton_leader_terms (
    service text   PRIMARY KEY,
    term    bigint NOT NULL
);
