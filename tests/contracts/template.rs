//! The contract between `template.yaml` and the code: what each function is given.

fn template() -> String {
    std::fs::read_to_string(format!("{}/template.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn every_function_timeout_states_its_worst_case_beside_it() {
    let text = template();
    let lines: Vec<&str> = text.lines().collect();
    let mut timeouts = 0;
    for (i, line) in lines.iter().enumerate() {
        if !line.trim_start().starts_with("Timeout:") {
            continue;
        }
        timeouts += 1;
        let comment: Vec<&str> = lines[..i]
            .iter()
            .rev()
            .take_while(|l| l.trim_start().starts_with('#'))
            .copied()
            .collect();
        assert!(
            comment.iter().any(|l| l.contains("Worst case:")),
            "line {}: {line} has no worst case stated above it",
            i + 1
        );
        let seconds: u64 = line.split(':').nth(1).unwrap().trim().parse().unwrap();
        assert!(
            (1..=900).contains(&seconds),
            "line {}: Lambda allows 1-900 s",
            i + 1
        );
    }
    assert_eq!(timeouts, 8, "one per function");
}

#[test]
fn the_tools_directory_is_a_parameter() {
    let text = template();
    assert!(
        text.contains("PG_BIN_DIR: !Ref PostgresBinDir"),
        "PG_BIN_DIR is not a parameter"
    );
    assert!(text.contains("  PostgresBinDir:\n    Type: String\n    Default: /opt/bin"));
}
