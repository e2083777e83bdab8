package sqlitestore

import "github.com/iotc-go/iotc/emulator/internal/core"

// applicationID marks the database file as an emulator store in the
// application_id field of its header (PRAGMA application_id): "iotc".
const applicationID = 0x696f7463

// migrations are the schema versions in order: migrations[i] takes a
// database from PRAGMA user_version i to i+1. Append a migration for a new
// version; never change one that shipped.
var migrations = []string{
	// Version 1: one table per kind of record, documents as JSON text.
	`
CREATE TABLE meta (
	key TEXT NOT NULL PRIMARY KEY,
	doc TEXT NOT NULL
);
CREATE TABLE groups (
	id  TEXT NOT NULL PRIMARY KEY,
	doc TEXT NOT NULL
);
CREATE TABLE devices (
	id  TEXT NOT NULL PRIMARY KEY,
	doc TEXT NOT NULL
);
CREATE TABLE templates (
	id  TEXT NOT NULL PRIMARY KEY,
	doc TEXT NOT NULL
);
CREATE TABLE certs (
	key TEXT NOT NULL PRIMARY KEY,
	doc TEXT NOT NULL
);
CREATE TABLE c2d (
	device TEXT    NOT NULL,
	id     TEXT    NOT NULL,
	seq    INTEGER NOT NULL,
	doc    TEXT    NOT NULL,
	PRIMARY KEY (device, id)
);
CREATE INDEX c2d_queue ON c2d (device, seq);
CREATE TABLE telemetry (
	seq    INTEGER PRIMARY KEY,
	device TEXT    NOT NULL,
	doc    TEXT    NOT NULL
);
CREATE TABLE commands (
	seq    INTEGER PRIMARY KEY,
	device TEXT    NOT NULL,
	doc    TEXT    NOT NULL
);
`,
	// Version 2: the events of the Event Hubs-compatible endpoint, one
	// sequence per stream ("{entity}/{partition}").
	`
CREATE TABLE events (
	stream TEXT    NOT NULL,
	seq    INTEGER NOT NULL,
	doc    TEXT    NOT NULL,
	PRIMARY KEY (stream, seq)
) WITHOUT ROWID;
`,
}

// SchemaVersion is the schema version this package writes (PRAGMA
// user_version); Open refuses a database with a newer one.
const SchemaVersion = 2

// table describes how the records of one kind are kept.
type table struct {
	kind core.Kind
	// put inserts or replaces a record; its arguments are those of args.
	put string
	// del deletes by identity.
	del string
	// trim deletes a device's records up to a seq ("" for unsequenced kinds).
	trim string
	// load selects every record in Load order.
	load string
}

// tables lists the tables in Load order (the order of storecheck.Kinds).
var tables = []table{
	plainTable(core.KindMeta, "meta", "key"),
	plainTable(core.KindGroup, "groups", "id"),
	plainTable(core.KindDevice, "devices", "id"),
	plainTable(core.KindTemplate, "templates", "id"),
	plainTable(core.KindCert, "certs", "key"),
	{
		kind: core.KindC2D,
		put: `INSERT INTO c2d (device, id, seq, doc) VALUES (?1, ?2, ?3, ?4)
			ON CONFLICT (device, id) DO UPDATE SET seq = excluded.seq, doc = excluded.doc`,
		del:  `DELETE FROM c2d WHERE device = ?1 AND id = ?2`,
		trim: `DELETE FROM c2d WHERE device = ?1 AND seq <= ?2`,
		load: `SELECT device, id, seq, doc FROM c2d ORDER BY device, seq, id`,
	},
	seqTable(core.KindTelemetry, "telemetry"),
	seqTable(core.KindCommand, "commands"),
	{
		kind: core.KindEvent,
		put: `INSERT INTO events (stream, seq, doc) VALUES (?1, ?2, ?3)
			ON CONFLICT (stream, seq) DO UPDATE SET doc = excluded.doc`,
		del:  `DELETE FROM events WHERE stream = ?1 AND seq = ?2`,
		trim: `DELETE FROM events WHERE stream = ?1 AND seq <= ?2`,
		load: `SELECT stream, '', seq, doc FROM events ORDER BY stream, seq`,
	},
}

func plainTable(k core.Kind, name, key string) table {
	return table{
		kind: k,
		put: `INSERT INTO ` + name + ` (` + key + `, doc) VALUES (?1, ?2)
			ON CONFLICT (` + key + `) DO UPDATE SET doc = excluded.doc`,
		del:  `DELETE FROM ` + name + ` WHERE ` + key + ` = ?1`,
		load: `SELECT '', ` + key + `, 0, doc FROM ` + name + ` ORDER BY ` + key,
	}
}

func seqTable(k core.Kind, name string) table {
	return table{
		kind: k,
		put: `INSERT INTO ` + name + ` (device, seq, doc) VALUES (?1, ?2, ?3)
			ON CONFLICT (seq) DO UPDATE SET device = excluded.device, doc = excluded.doc`,
		del:  `DELETE FROM ` + name + ` WHERE seq = ?2 AND device = ?1`,
		trim: `DELETE FROM ` + name + ` WHERE device = ?1 AND seq <= ?2`,
		load: `SELECT device, '', seq, doc FROM ` + name + ` ORDER BY device, seq`,
	}
}

// deleteDevice removes a device with everything it owns.
var deleteDevice = []string{
	`DELETE FROM devices WHERE id = ?1`,
	`DELETE FROM c2d WHERE device = ?1`,
	`DELETE FROM telemetry WHERE device = ?1`,
	`DELETE FROM commands WHERE device = ?1`,
}

// tableOf returns the table of k (k is known: storecheck validated it).
func tableOf(k core.Kind) *table {
	for i := range tables {
		if tables[i].kind == k {
			return &tables[i]
		}
	}
	return nil
}
