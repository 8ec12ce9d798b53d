//! Property tests of every function's event parser: arbitrary JSON, and each sample event in
//! `events/` with one field removed or replaced by arbitrary JSON. Whatever comes in, no
//! function panics, and an event that is not its function's input is refused with
//! `InvalidInput`. Every AWS call goes to a closed port with retries off, so an input that
//! does parse fails fast without touching anything.

mod common;

use backstop_core::drill::DrillTask;
use backstop_core::guard::StageEvent;
use backstop_core::pipeline::JobEvent;
use backstop_core::tasks::{
    invoke, Context, JobReport, PruneTask, RestoreTask, TargetTask, VerifyTask, FUNCTIONS,
};
use proptest::prelude::*;
use serde_json::Value;

/// Arbitrary JSON, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        prop_oneof![
            Just("FAILED"),
            Just("shop"),
            Just("database"),
            Just("instance"),
            Just("run"),
            Just("aws.codepipeline"),
            Just("")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    any::<String>(),
                    Just("mode".to_string()),
                    Just("type".to_string()),
                    Just("detail".to_string()),
                    Just("application".to_string()),
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Whether `payload` is `function`'s input, by the types its handler reads.
fn parses(function: &str, payload: &Value) -> bool {
    fn ok<T: serde::de::DeserializeOwned>(v: &Value) -> bool {
        serde_json::from_value::<T>(v.clone()).is_ok()
    }
    match function {
        "start-backup" => ok::<TargetTask>(payload),
        "poll-job" => ok::<JobReport>(payload),
        "restore" => ok::<RestoreTask>(payload),
        "verify" => ok::<VerifyTask>(payload),
        "pipeline-action" => ok::<JobEvent>(payload),
        "prune" => ok::<PruneTask>(payload),
        "guard" => StageEvent::parse(payload.clone()).is_ok(),
        "drill" => ok::<DrillTask>(payload),
        other => panic!("a new function needs its parser here: {other}"),
    }
}

fn sample(function: &str) -> Value {
    let name = match function {
        "verify" => "verify-run",
        other => other,
    };
    let path = format!("{}/events/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Every path to a field of `v` (object keys and array indexes).
fn paths(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                at.push(k.clone());
                out.push(at.clone());
                paths(child, at, out);
                at.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                at.push(i.to_string());
                out.push(at.clone());
                paths(child, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

/// `v` with the field at `path` removed (`None`) or replaced.
fn mutate(v: &Value, path: &[String], with: Option<Value>) -> Value {
    let mut out = v.clone();
    let (last, parents) = path.split_last().unwrap();
    let mut node = &mut out;
    for p in parents {
        node = match node {
            Value::Object(m) => m.get_mut(p).unwrap(),
            Value::Array(a) => &mut a[p.parse::<usize>().unwrap()],
            _ => unreachable!(),
        };
    }
    match (node, with) {
        (Value::Object(m), None) => {
            m.remove(last);
        }
        (Value::Object(m), Some(w)) => {
            m.insert(last.clone(), w);
        }
        (Value::Array(a), None) => {
            a.remove(last.parse::<usize>().unwrap());
        }
        (Value::Array(a), Some(w)) => a[last.parse::<usize>().unwrap()] = w,
        _ => unreachable!(),
    }
    out
}

struct Bench {
    rt: tokio::runtime::Runtime,
    ctx: Context,
}

fn bench() -> Bench {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ctx = common::closed_port_context(&rt);
    Bench { rt, ctx }
}

/// The property: no panic; refused with `InvalidInput` unless it is the function's input.
fn check(b: &Bench, function: &str, payload: Value) -> Result<(), TestCaseError> {
    let valid = parses(function, &payload);
    let result = b.rt.block_on(invoke(&b.ctx, function, payload.clone()));
    if !valid {
        match result {
            Err(e) => prop_assert_eq!(
                e.error_type(),
                "InvalidInput",
                "{} {}: {}",
                function,
                payload,
                e
            ),
            Ok(out) => {
                return Err(TestCaseError::fail(format!(
                    "{function} took {payload} and answered {out}"
                )))
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_json_is_refused_by_every_function(payload in json()) {
        let b = bench();
        for function in FUNCTIONS {
            check(&b, function, payload.clone())?;
        }
    }

    #[test]
    fn a_sample_event_with_one_field_removed_or_replaced_is_refused_or_valid(
        function in prop::sample::select(FUNCTIONS.to_vec()),
        pick in any::<prop::sample::Index>(),
        replacement in prop::option::of(json()),
    ) {
        let b = bench();
        let event = sample(function);
        let mut all = Vec::new();
        paths(&event, &mut Vec::new(), &mut all);
        prop_assume!(!all.is_empty());
        let path = pick.get(&all);
        check(&b, function, mutate(&event, path, replacement))?;
    }
}
