-- Artifact scanning (docs/SUPPLY_CHAIN.md): what the scanner found in each file of a version,
-- written in the same transaction as the version (or a rescan), never changed afterwards
-- except by a rescan, which replaces a version's rows and is audited.
--
-- report: the scanner's JSON report for the file (format, status, findings, imports, licence).
-- max_severity: the worst finding (low, medium, high, critical), NULL when there is none.
-- scanner: the scanner and rule-set version; a report is reused for the same bytes at the same
--          path only when it came from the same scanner.
CREATE TABLE file_scans (
    version_id   INTEGER NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
    path         TEXT NOT NULL,
    digest       TEXT NOT NULL,
    format       TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('scanned', 'skipped', 'incomplete')),
    max_severity TEXT CHECK (max_severity IN ('low', 'medium', 'high', 'critical')),
    report       TEXT NOT NULL,
    scanner      TEXT NOT NULL,
    scanned_at   INTEGER NOT NULL,
    PRIMARY KEY (version_id, path)
);
CREATE INDEX file_scans_digest ON file_scans(digest, path);
