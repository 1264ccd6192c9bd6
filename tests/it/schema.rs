//! `schema.graphql` is what `keyledger print-schema` prints.
#[test]
fn checked_in_schema_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    let current = keyledger::graphql::sdl();
    if std::env::var("UPDATE_SCHEMA").is_ok() {
        std::fs::write(path, &current).expect("write schema.graphql");
        return;
    }
    assert!(
        checked_in == current,
        "schema.graphql is stale: run `just schema` (or UPDATE_SCHEMA=1 cargo test schema)"
    );
}

#[test]
fn print_schema_subcommand_prints_the_sdl() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .arg("print-schema")
        .output()
        .expect("run keyledger print-schema");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        keyledger::graphql::sdl()
    );
}
