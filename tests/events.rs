//! The sample events in `events/` are valid inputs of their functions (so `sam local invoke`
//! and `cargo lambda invoke` get what the state machine sends), and a missing or malformed
//! field is `InvalidInput` before anything is touched.

mod common;

use backstop_core::drill::DrillTask;
use backstop_core::guard::StageEvent;
use backstop_core::pipeline::JobEvent;
use backstop_core::run::RunDocument;
use backstop_core::tasks::{
    invoke, Context, JobReport, PruneTask, RestoreTask, TargetTask, VerifyTask,
};
use serde_json::{json, Value};

fn event(name: &str) -> Value {
    let path = format!("{}/events/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_sample_event_is_a_valid_input_of_its_function() {
    let t: TargetTask = serde_json::from_value(event("start-backup")).unwrap();
    assert_eq!(t.application, "shop");
    let j: JobReport = serde_json::from_value(event("poll-job")).unwrap();
    assert_eq!(j.status, "PENDING");
    let r: RestoreTask = serde_json::from_value(event("restore")).unwrap();
    assert_eq!(r.restore_id, r.task.backup_id);
    for mode in ["run", "backup", "deployment"] {
        let v: VerifyTask = serde_json::from_value(event(&format!("verify-{mode}")))
            .unwrap_or_else(|e| panic!("verify-{mode}: {e}"));
        if let VerifyTask::Run { document } = v {
            let doc = RunDocument::parse(document).unwrap();
            assert_eq!(doc.checks.consecutive, 3);
        }
    }
    let job: JobEvent = serde_json::from_value(event("pipeline-action")).unwrap();
    assert!(job.job.data.continuation_token.is_none());
    let params = &job.job.data.action_configuration.configuration["UserParameters"];
    let doc = RunDocument::parse(serde_json::from_str(params).unwrap()).unwrap();
    assert_eq!(doc.version.commit.as_deref(), Some("3f2a9c1"));
    let prune: PruneTask = serde_json::from_value(event("prune")).unwrap();
    assert!(prune.dry_run, "the sample deletes nothing");
    let drill: DrillTask = serde_json::from_value(event("drill")).unwrap();
    assert!(
        drill.application.is_none(),
        "the schedule drills every application"
    );
    let stage = StageEvent::parse(event("guard")).unwrap();
    assert_eq!(
        (
            stage.pipeline.as_str(),
            stage.stage.as_str(),
            stage.state.as_str()
        ),
        ("shop-pipeline", "Deploy", "FAILED")
    );
    let listed: Vec<String> = std::fs::read_dir(format!("{}/events", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert_eq!(
        listed.len(),
        10,
        "a new event needs a check here: {listed:?}"
    );
}

#[test]
fn a_missing_or_malformed_field_is_invalid_input_and_calls_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Every AWS call would go to a closed port and fail with another error.
    let ctx = common::closed_port_context(&rt);
    let guard_without = |field: &str| {
        let mut e = event("guard");
        e["detail"].as_object_mut().unwrap().remove(field);
        e
    };
    let mut guard_wrong_source = event("guard");
    guard_wrong_source["source"] = json!("aws.codedeploy");
    let mut guard_number_id = event("guard");
    guard_number_id["detail"]["execution-id"] = json!(42);
    let mut guard_empty_stage = event("guard");
    guard_empty_stage["detail"]["stage"] = json!(" ");
    let mut no_backup_id = event("start-backup");
    no_backup_id.as_object_mut().unwrap().remove("backup_id");
    let mut bad_target = event("restore");
    bad_target["target"] = json!({"type": "disk"});
    let mut bad_status = event("poll-job");
    bad_status["next_wait_seconds"] = json!("soon");
    for (function, payload) in [
        ("start-backup", no_backup_id),
        ("restore", bad_target),
        ("poll-job", bad_status),
        ("verify", json!({"mode": "everything"})),
        (
            "verify",
            json!({"mode": "run", "document": {"application": "shop"}}),
        ),
        ("pipeline-action", json!({"CodePipeline.job": {"data": {}}})),
        ("pipeline-action", json!({"id": "job-without-envelope"})),
        ("prune", json!({"keep_last": "three", "max_age_days": 30})),
        ("prune", json!({"max_age_days": 30})),
        ("guard", guard_without("execution-id")),
        ("guard", guard_without("pipeline")),
        ("guard", guard_without("state")),
        ("guard", guard_wrong_source),
        ("guard", guard_number_id),
        ("guard", guard_empty_stage),
        (
            "guard",
            json!({"detail-type": "Scheduled Event", "source": "aws.events"}),
        ),
        ("drill", json!({"volume_wait_seconds": "ten"})),
        ("drill", json!({"applications": ["shop"]})),
        ("drill", json!({"application": 7})),
        ("nothing", json!({})),
    ] {
        let err = rt
            .block_on(invoke(&ctx, function, payload.clone()))
            .unwrap_err();
        assert_eq!(
            err.error_type(),
            "InvalidInput",
            "{function} {payload}: {err}"
        );
    }
    let shared = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .build();
    let missing = Context::new(&shared, "", "backstop").err().unwrap();
    assert_eq!(missing.error_type(), "InvalidInput");
}

/// The run documents of `examples/pipeline.yaml`: the Step Functions action's Literal input and
/// the Lambda action's UserParameters, each once CodePipeline has put in its variables.
#[test]
fn the_sample_pipeline_passes_valid_run_documents() {
    let path = format!("{}/examples/pipeline.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let key = line.trim();
        if key != "Input: |" && key != "UserParameters: |" {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let block: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| l.len() - l.trim_start().len() > indent)
            .copied()
            .collect();
        let json_text = block
            .join("\n")
            .replace("#{SourceVariables.CommitId}", "3f2a9c1")
            .replace("#{codepipeline.PipelineExecutionId}", "0f1e2d3c-aaaa");
        let doc = RunDocument::parse(
            serde_json::from_str(&json_text)
                .unwrap_or_else(|e| panic!("{key} in {path} is not JSON ({e}): {json_text}")),
        )
        .unwrap_or_else(|e| panic!("{key} in {path}: {e}"));
        assert_eq!(doc.version.commit.as_deref(), Some("3f2a9c1"));
        assert_eq!(
            doc.version.pipeline_execution_id.as_deref(),
            Some("0f1e2d3c-aaaa")
        );
        found.push(key.to_string());
    }
    assert_eq!(found, ["Input: |", "UserParameters: |"]);
}
