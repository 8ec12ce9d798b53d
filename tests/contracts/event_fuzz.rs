//! Property tests of every function's event parser: arbitrary JSON, and each sample event in
//! `events/` with one field removed or replaced by arbitrary JSON. Whatever comes in, no
//! function panics, and an event that is not its function's input is refused with
//! `InvalidInput`. The inputs are the state machine's typed tasks and the events AWS sends
//! (guard's EventBridge stage event, pipeline-action's `CodePipeline.job`, prune's and drill's
//! `Scheduled Event`), each with what its handler checks before anything else. Every AWS call
//! goes to a closed port with retries off, so an input that does parse fails fast without
//! touching anything.

use aws_lambda_events::event::codepipeline_job::CodePipelineJobEvent;
use backstop_core::model::job::{JobReport, TargetTask};
use backstop_core::tasks::guard::{StageEvent, STAGE_EVENT};
use backstop_core::tasks::restore::RestoreTask;
use backstop_core::tasks::verify::VerifyTask;
use backstop_core::tasks::{check_scheduled, invoke, ScheduledEvent, FUNCTIONS};
use backstop_core::Context;
use proptest::prelude::*;
use serde_json::Value;

use crate::support::{closed_port_context, sample_event};

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
            Just("aws.events"),
            Just("Scheduled Event"),
            Just(STAGE_EVENT),
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

/// Whether `payload` is `function`'s input: the type its handler reads, and what the handler
/// checks of it before anything else.
fn parses(function: &str, payload: &Value) -> bool {
    fn read<T: serde::de::DeserializeOwned>(v: &Value) -> Option<T> {
        serde_json::from_value::<T>(v.clone()).ok()
    }
    match function {
        "start-backup" => read::<TargetTask>(payload).is_some(),
        "poll-job" => read::<JobReport>(payload).is_some(),
        "restore" => read::<RestoreTask>(payload).is_some(),
        "verify" => read::<VerifyTask>(payload).is_some(),
        // A job without an id has no job to answer.
        "pipeline-action" => read::<CodePipelineJobEvent>(payload).is_some_and(|e| {
            e.code_pipeline_job
                .id
                .is_some_and(|id| !id.trim().is_empty())
        }),
        "prune" | "drill" => {
            read::<ScheduledEvent>(payload).is_some_and(|e| check_scheduled(&e).is_ok())
        }
        "guard" => read::<StageEvent>(payload).is_some_and(|e| {
            let d = &e.detail;
            e.source == "aws.codepipeline"
                && e.detail_type == STAGE_EVENT
                && [&d.pipeline, &d.execution_id, &d.stage, &d.state]
                    .iter()
                    .all(|v| !v.trim().is_empty())
        }),
        other => panic!("a new function needs its parser here: {other}"),
    }
}

fn sample(function: &str) -> Value {
    sample_event(match function {
        "verify" => "verify-run",
        other => other,
    })
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ctx = closed_port_context();
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
