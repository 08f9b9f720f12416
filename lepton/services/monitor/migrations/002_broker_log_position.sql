-- How far the monitor has relayed the broker's denials log to lepton.audit
-- (broker_denials.py): every line before (inode, position) is on the broker; head tells
-- that file from a later one on the same inode (log_follower.fingerprint). Per
-- installation (namespace) and file.
CREATE TABLE monitor_broker_log (
    namespace text   NOT NULL,
    path      text   NOT NULL,
    inode     bigint NOT NULL,
    position  bigint NOT NULL,
    head      text   NOT NULL,
    PRIMARY KEY (namespace, path)
);
