//! Guard's handling of CodePipeline stage events, with no server: a stage that did not fail,
//! or is not guarded, is ignored without a single AWS call; a failed guarded stage of a
//! pipeline execution Backstop took no backup for is reported (`GuardFoundNoBackup`) and
//! restores nothing; a failed guarded stage with no state machine configured is refused.

use backstop_core::model::manifest::BackupState;
use backstop_core::tasks::guard::{self, GuardOutcome, StageEvent};
use backstop_core::{Config, Context};
use serde_json::json;

use crate::support::offline::guarded;
use crate::support::{memory_context, sample_event, FakeAws};
use crate::{block_on, day, manifest};

/// The sample stage event (shop-pipeline, Deploy, FAILED) with these changes to its detail.
fn stage(pipeline: &str, stage: &str, state: &str) -> StageEvent {
    let mut e = sample_event("guard");
    e["detail"]["pipeline"] = json!(pipeline);
    e["detail"]["stage"] = json!(stage);
    e["detail"]["state"] = json!(state);
    serde_json::from_value(e).unwrap()
}

/// Guard watching shop-pipeline:Deploy, its catalog in memory holding a verified backup of
/// another pipeline execution, AWS the recording fake.
fn context(aws: &FakeAws, config: Config) -> Context {
    let (ctx, _) = memory_context(aws.shared(), config);
    let mut m = manifest(
        "shop",
        "20261101T000000Z-00000001",
        day(1),
        BackupState::Completed,
    );
    m.run = Some(
        backstop_core::model::run::RunDocument::from_json(
            &json!({
                "application": "shop",
                "version": {"pipeline_execution_id": "an-earlier-execution"},
                "targets": [{"type": "database", "url_env": "SHOP_DB_URL"}]
            })
            .to_string(),
        )
        .unwrap(),
    );
    block_on(ctx.catalog().write_manifest(&m)).unwrap();
    ctx
}

#[test]
fn guard_ignores_a_stage_that_did_not_fail_or_is_not_guarded_and_calls_nothing() {
    let aws = FakeAws::new();
    let ctx = context(&aws, guarded(Config::new("backups", "backstop")));
    for state in [
        "STARTED",
        "SUCCEEDED",
        "RESUMED",
        "CANCELED",
        "STOPPED",
        "STOPPING",
    ] {
        let out = block_on(guard::handle(&ctx, stage("shop-pipeline", "Deploy", state))).unwrap();
        assert_eq!(
            out,
            GuardOutcome::Ignored {
                reason: format!("stage Deploy is {state}, not FAILED")
            }
        );
    }
    for (pipeline, name) in [("shop-pipeline", "Build"), ("billing-pipeline", "Deploy")] {
        let out = block_on(guard::handle(&ctx, stage(pipeline, name, "FAILED"))).unwrap();
        assert_eq!(
            out,
            GuardOutcome::Ignored {
                reason: format!(
                    "stage {name} of pipeline {pipeline} is not guarded (BACKSTOP_GUARD_STAGES)"
                )
            }
        );
    }
    assert_eq!(aws.calls(), Vec::<String>::new(), "nothing was called");
}

#[test]
fn mocked_a_failed_guarded_stage_without_a_backup_is_reported_and_restores_nothing() {
    let aws = FakeAws::new().accepting_events();
    let ctx = context(&aws, guarded(Config::new("backups", "backstop")));
    let event = stage("shop-pipeline", "Deploy", "FAILED");
    let execution = event.detail.execution_id.clone();
    let out = block_on(guard::handle(&ctx, event)).unwrap();
    assert_eq!(
        out,
        GuardOutcome::NoBackup {
            pipeline: "shop-pipeline".to_string(),
            stage: "Deploy".to_string(),
            pipeline_execution_id: execution.clone(),
        }
    );
    // Reported, and no execution started or even looked for.
    assert_eq!(aws.calls(), ["events:PutEvents"]);
    let published = aws.published();
    assert_eq!(published[0].0, "GuardFoundNoBackup");
    let detail = &published[0].1;
    assert_eq!(detail["pipeline"], "shop-pipeline");
    assert_eq!(detail["stage"], "Deploy");
    assert_eq!(detail["pipeline_execution_id"], execution.as_str());
    assert!(detail.get("backup_id").is_none(), "{detail}");
}

#[test]
fn a_failed_guarded_stage_with_no_state_machine_is_refused() {
    let aws = FakeAws::new();
    let mut config = guarded(Config::new("backups", "backstop"));
    config.state_machine_arn = None;
    let ctx = context(&aws, config);
    let err = block_on(guard::handle(
        &ctx,
        stage("shop-pipeline", "Deploy", "FAILED"),
    ))
    .unwrap_err();
    assert_eq!(err.error_type(), "InvalidInput", "{err}");
    assert!(
        err.to_string().contains("BACKSTOP_STATE_MACHINE_ARN"),
        "{err}"
    );
    assert_eq!(aws.calls(), Vec::<String>::new());
}
