//! The layout's one rule, checked: a module uses only modules listed above it in `lib.rs`'s
//! Layout (or its own folder), so dependencies point one way and no import cycle can form.

use std::collections::BTreeMap;
use std::path::Path;

/// Each top-level module and its rank; a module may use only lower ranks.
const RANKS: [(&str, u32); 13] = [
    ("deadline", 0),
    ("error", 0),
    ("progress", 0),
    ("model", 1),
    ("aws", 2),
    ("store", 3),
    ("catalog", 4),
    ("db", 5),
    ("instance", 5),
    ("checks", 6),
    ("retention", 6),
    ("context", 7),
    ("tasks", 8),
];

fn sources(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("core/src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The top-level modules a file names as `crate::<module>`.
fn used(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let name: String = text[i + 7..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.push(name);
    }
    out
}

#[test]
fn layout_dependencies_point_one_way() {
    let ranks: BTreeMap<&str, u32> = RANKS.into_iter().collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&root).expect("under src");
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" || top == "layout" {
            continue;
        }
        let own = *ranks
            .get(top.as_str())
            .unwrap_or_else(|| panic!("{} is in no layer of RANKS", rel.display()));
        let text = std::fs::read_to_string(&file).expect("a source file");
        assert!(
            !text.contains("super::super"),
            "{}: reach other modules by crate:: paths",
            rel.display()
        );
        for module in used(&text) {
            if module == top {
                continue;
            }
            match ranks.get(module.as_str()) {
                Some(r) if *r < own => {}
                Some(_) => wrong.push(format!("{} uses crate::{module}", rel.display())),
                None => wrong.push(format!("{} uses unknown crate::{module}", rel.display())),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "against the layout:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_layout_sees_crate_paths_only() {
    assert_eq!(
        used("use crate::model::run; x::crate::no; crate::aws::ec2"),
        ["model", "aws"]
    );
}
