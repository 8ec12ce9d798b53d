//! The progress bar: shown (bytes and rate) when stderr is a terminal, absent otherwise.

use crate::support::Bed;

#[test]
fn progress_shows_on_a_terminal_and_nowhere_else() {
    let bed = Bed::new()
        .database(
            "app",
            "CREATE TABLE big AS SELECT g, md5(g::text) || md5((g * 3)::text) AS p FROM generate_series(1, 300000) g;",
        )
        .moto()
        .build();
    let cli = bed.cli();

    // Not a terminal: stdout has only the id, stderr nothing.
    let run = cli.catalog(&[
        "db",
        "backup",
        "--database-url",
        &cli.url("app"),
        "--compression",
        "none",
    ]);
    assert!(run.ok, "{}", run.all());
    assert_eq!(run.stderr, "", "quiet when stderr is not a terminal");

    // A pseudo-terminal through util-linux `script`; the URL goes through the environment.
    let command = format!(
        "{} db backup --bucket {} --compression none",
        env!("CARGO_BIN_EXE_backstop"),
        bed.bucket
    );
    let out = std::process::Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .env_remove("BACKSTOP_LOG")
        .envs(cli.environment())
        .env("BACKSTOP_DATABASE_URL", cli.url("app"))
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("dump app"), "label shown: {screen:?}");
    assert!(
        screen.contains("MiB") && screen.contains("/s"),
        "bytes and rate shown: {screen:?}"
    );
}
