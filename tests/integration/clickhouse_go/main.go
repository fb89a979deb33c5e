// Grafana's ClickHouse plugin's client, clickhouse-go over HTTP, against the embedded query
// endpoint: run by tests/integration/test_clickhouse_http.py, which checks what it prints.
//
// It connects as the plugin does (HTTP, the JWT as the basic password, settings as URL
// parameters, its client name), pings, runs the plugin's kinds of query (a table, a time
// series, the schema browser's list of tables) and a write, and prints one JSON object.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

type outcome struct {
	Ping     string     `json:"ping"`
	Version  string     `json:"version"`
	Counts   [][]any    `json:"counts"`
	Series   int        `json:"series_points"`
	Row      []any      `json:"row"`
	Tables   []string   `json:"tables"`
	Insert   errorShape `json:"insert"`
	Failures []string   `json:"failures"`
}

type errorShape struct {
	Code    int32  `json:"code"`
	Message string `json:"message"`
}

func shape(err error) errorShape {
	var exc *clickhouse.Exception
	if errors.As(err, &exc) {
		return errorShape{Code: exc.Code, Message: exc.Message}
	}
	if err != nil {
		return errorShape{Code: -1, Message: err.Error()}
	}
	return errorShape{}
}

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	db := clickhouse.OpenDB(&clickhouse.Options{
		Addr:     []string{os.Getenv("CH_ADDR")},
		Protocol: clickhouse.HTTP,
		Auth:     clickhouse.Auth{Username: "grafana", Password: os.Getenv("CH_JWT")},
		Settings: clickhouse.Settings{"max_execution_time": 60},
		ClientInfo: clickhouse.ClientInfo{Products: []struct{ Name, Version string }{
			{Name: "grafana-clickhouse-datasource", Version: "4.0.0"},
		}},
		DialTimeout: 10 * time.Second,
	})
	defer db.Close()
	var out outcome
	fail := func(what string, err error) { out.Failures = append(out.Failures, fmt.Sprintf("%s: %v", what, err)) }

	if err := db.PingContext(ctx); err != nil {
		out.Ping = err.Error()
	} else {
		out.Ping = "ok"
	}
	if err := db.QueryRowContext(ctx, "SELECT version()").Scan(&out.Version); err != nil {
		fail("version", err)
	}
	if rows, err := db.QueryContext(ctx, "SELECT tenant, count() AS n FROM events GROUP BY tenant ORDER BY tenant"); err != nil {
		fail("counts", err)
	} else {
		for rows.Next() {
			var tenant string
			var n uint64
			if err := rows.Scan(&tenant, &n); err != nil {
				fail("counts scan", err)
			}
			out.Counts = append(out.Counts, []any{tenant, n})
		}
		rows.Close()
	}
	series := "SELECT toStartOfSecond(occurred_at) AS time, event_type, count() AS n FROM events " +
		"GROUP BY time, event_type ORDER BY time"
	if rows, err := db.QueryContext(ctx, series); err != nil {
		fail("series", err)
	} else {
		for rows.Next() {
			var at time.Time
			var kind string
			var n uint64
			if err := rows.Scan(&at, &kind, &n); err != nil {
				fail("series scan", err)
			}
			out.Series++
		}
		rows.Close()
	}
	// one row of the types a table panel shows: LowCardinality, Nullable, Array, Map, DateTime64
	var (
		id, tenant string
		source     sql.NullString
		masked     []string
		enrichment map[string]string
		occurred   time.Time
		schema     uint32
	)
	row := db.QueryRowContext(ctx, "SELECT event_id, tenant, source, masked_fields, enrichment, "+
		"occurred_at, schema_id FROM events ORDER BY event_id LIMIT 1")
	if err := row.Scan(&id, &tenant, &source, &masked, &enrichment, &occurred, &schema); err != nil {
		fail("row", err)
	} else {
		var src any
		if source.Valid {
			src = source.String
		}
		at := occurred.UTC().Format("2006-01-02 15:04:05.000")
		out.Row = []any{id, tenant, src, masked, enrichment, at, schema}
	}
	if rows, err := db.QueryContext(ctx, "SELECT database, name FROM system.tables ORDER BY database, name"); err != nil {
		fail("tables", err)
	} else {
		for rows.Next() {
			var database, name string
			if err := rows.Scan(&database, &name); err != nil {
				fail("tables scan", err)
			}
			out.Tables = append(out.Tables, database+"."+name)
		}
		rows.Close()
	}
	_, err := db.ExecContext(ctx, "INSERT INTO events (event_id, tenant) VALUES ('forged', 'acme')")
	out.Insert = shape(err)
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		panic(err)
	}
}
