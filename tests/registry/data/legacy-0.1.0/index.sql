BEGIN TRANSACTION;
CREATE TABLE aliases (
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (name, alias),
    FOREIGN KEY (name, version) REFERENCES versions (name, version)
);
INSERT INTO "aliases" VALUES('rte','prod',1);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO "meta" VALUES('schema_version','1');
CREATE TABLE names (name TEXT PRIMARY KEY, last_version INTEGER NOT NULL);
INSERT INTO "names" VALUES('rte',1);
CREATE TABLE tags (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (name, version, key),
    FOREIGN KEY (name, version) REFERENCES versions (name, version) ON DELETE CASCADE
);
INSERT INTO "tags" VALUES('rte',1,'team','nlp');
CREATE TABLE versions (
    name TEXT NOT NULL REFERENCES names(name),
    version INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    task TEXT NOT NULL,
    method TEXT NOT NULL,
    backbone TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    d_model INTEGER NOT NULL,
    n_tokens INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    main_metric REAL,
    created_at TEXT NOT NULL,
    deprecated INTEGER NOT NULL DEFAULT 0,
    parent TEXT,
    size INTEGER NOT NULL,
    PRIMARY KEY (name, version),
    UNIQUE (name, sha256)
);
INSERT INTO "versions" VALUES('rte',1,'5fc986a7a3ab43517646413a6097da6349a6ece917285ee090e19f289afccc35','rte','superpos','google/t5-small-lm-adapt','sha256:abababababababababababababababababababababababababababababababab',8,2,'{"test": {"accuracy": 0.5, "invalid_rate": 0.5}, "validation": {"accuracy": 0.75}}',0.5,'2026-11-22T17:56:52+00:00',0,NULL,1216);
CREATE INDEX versions_sha256 ON versions (sha256);
CREATE INDEX aliases_target ON aliases (name, version);
COMMIT;
