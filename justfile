# keyledger — run `just` to see the recipes.

pg := env_var_or_default("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
redis := env_var_or_default("TEST_REDIS_URL", "redis://127.0.0.1:6379")

_default:
    @just --list

# Run the server on the embedded defaults (SQLite file, in-process events, mail as files)
run:
    cargo run

# The test suite on SQLite
test:
    cargo test

# The test suite on PostgreSQL + Redis (the machine's services), with the
# tests that need them
test-pg:
    TEST_DATABASE_URL={{pg}} TEST_REDIS_URL={{redis}} cargo test -- --include-ignored

# Everything CI runs
ci:
    .ci/run

# Regenerate schema.graphql from the code
schema:
    cargo run -q -- print-schema > schema.graphql

# Format and lint
lint:
    cargo fmt --all
    cargo clippy --all-targets --workspace -- -D warnings

# Live events benchmark (release build, PostgreSQL + Redis): every scenario, or those named (idle, fanout, replay, scale; see bench/README.md)
bench-events *SCENARIOS:
    #!/usr/bin/env bash
    set -euo pipefail
    # Thousands of websockets need as many descriptors in the servers and in
    # the generators (the hard limit, where it is below 65,536).
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    BENCH_DATABASE_URL={{pg}} BENCH_REDIS_URL={{redis}} cargo bench --bench events -- {{SCENARIOS}}

# All benchmarks (release build, PostgreSQL + Redis of this machine; see bench/README.md); events first, so the load table shows its fresh figures
bench: bench-events bench-load

# Claims vs the raw SQL ceiling, the read query, signIn, key generation, validateLicense
bench-load:
    TEST_DATABASE_URL={{pg}} TEST_REDIS_URL={{redis}} cargo bench --bench load

# Only the licensed software beyond validation: checkOutLicense throughput, heartbeatLicense from 10,000 devices and the server's CPU
bench-licensing:
    TEST_DATABASE_URL={{pg}} TEST_REDIS_URL={{redis}} cargo bench --bench load -- licensing
# Outbound webhooks: deliveries/s to 20 local endpoints with 1,000 events queued, SQLite then PostgreSQL
bench-webhooks:
    cargo bench --bench webhooks
    BENCH_DATABASE_URL={{pg}} cargo bench --bench webhooks

# Only the key-generation timing: markOrderPaid of 100,000 keys on PostgreSQL and SQLite
bench-keys:
    TEST_DATABASE_URL={{pg}} TEST_REDIS_URL={{redis}} cargo bench --bench load -- keys

# Admin filters on a 1,000,000-key PostgreSQL store: p99 at concurrency 8 and each filter's plan (bench/results/admin-explain.md)
bench-admin:
    TEST_DATABASE_URL={{pg}} TEST_REDIS_URL={{redis}} cargo bench --bench load -- admin
