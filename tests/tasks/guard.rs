//! Guard's handling of CodePipeline stage events, with no server: a stage that did not fail,
//! or is not guarded, is ignored without a single AWS call; a failed guarded stage of a
//! pipeline execution Backstop took no backup for is reported (`GuardFoundNoBackup`) and
//! restores nothing; a failed guarded stage with no state machine configured is refused. And
//! of protect executions' status changes: only one that ended after its deploy began without
//! reaching its restore is acted on (the restore itself runs in the `flow` binary).

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
        let out = block_on(guard::handle_stage(
            &ctx,
            stage("shop-pipeline", "Deploy", state),
        ))
        .unwrap();
        assert_eq!(
            out,
            GuardOutcome::Ignored {
                reason: format!("stage Deploy is {state}, not FAILED")
            }
        );
    }
    for (pipeline, name) in [("shop-pipeline", "Build"), ("billing-pipeline", "Deploy")] {
        let out = block_on(guard::handle_stage(&ctx, stage(pipeline, name, "FAILED"))).unwrap();
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
    let out = block_on(guard::handle_stage(&ctx, event)).unwrap();
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
    let err = block_on(guard::handle_stage(
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

/// The `Step Functions Execution Status Change` of protect execution `name`.
fn ended(ctx: &Context, name: &str, status: &str, error: Option<&str>) -> guard::GuardEvent {
    let machine = ctx.config.state_machine_arn.clone().unwrap();
    let arn = machine.replace(":stateMachine:", ":execution:") + ":" + name;
    serde_json::from_value(json!({
        "version": "0", "id": "e-1", "detail-type": guard::EXECUTION_EVENT,
        "source": "aws.states", "account": "123456789012", "time": "2026-12-07T12:00:00Z",
        "region": "us-east-1", "resources": [arn],
        "detail": {"executionArn": arn, "stateMachineArn": machine, "name": name,
                   "status": status, "error": error, "cause": null}
    }))
    .unwrap()
}

/// GetExecutionHistory's answer: an execution that started with the shop's run and entered
/// `states`.
fn history(states: &[&str]) -> String {
    let mut events = vec![
        json!({"id": 1, "timestamp": 1.8e9, "type": "ExecutionStarted",
        "executionStartedEventDetails": {"input": "{\"application\":\"shop\"}"}}),
    ];
    for (i, s) in states.iter().enumerate() {
        events.push(
            json!({"id": i + 2, "timestamp": 1.8e9, "type": "StateEntered",
            "stateEnteredEventDetails": {"name": s}}),
        );
    }
    json!({"events": events}).to_string()
}

#[test]
fn mocked_an_ended_execution_is_restored_only_when_its_deploy_began_and_its_restore_never_ran() {
    let backup = "20261101T000000Z-00000001";
    // Not an end to act on, another machine, guard's own restore, or an end through the
    // state machine's own paths: no call at all.
    let aws = FakeAws::new();
    let ctx = context(&aws, guarded(Config::new("backups", "backstop")));
    for (status, error) in [
        ("SUCCEEDED", None),
        ("RUNNING", None),
        ("FAILED", Some("DeployFailed")),
        ("FAILED", Some("BackupFailed")),
        ("FAILED", Some("InvalidInput")),
    ] {
        let out = block_on(guard::handle(&ctx, ended(&ctx, backup, status, error))).unwrap();
        assert!(
            matches!(out, GuardOutcome::Ignored { .. }),
            "{status} {error:?}: {out:?}"
        );
    }
    let own = block_on(guard::handle(
        &ctx,
        ended(&ctx, &format!("guard-{backup}"), "FAILED", None),
    ));
    assert!(matches!(own.unwrap(), GuardOutcome::Ignored { .. }));
    let mut other = ended(&ctx, backup, "ABORTED", None);
    other.detail["stateMachineArn"] =
        json!("arn:aws:states:us-east-1:123456789012:stateMachine:other");
    assert!(matches!(
        block_on(guard::handle(&ctx, other)).unwrap(),
        GuardOutcome::Ignored { .. }
    ));
    assert_eq!(aws.calls(), Vec::<String>::new());

    // Ended before its deploy began, or after its restore path ran: the history says so.
    for states in [
        vec!["Entry", "Prepare", "NameBackup", "BackupTargets"],
        vec![
            "Entry",
            "Prepare",
            "NameBackup",
            "BackupTargets",
            "VerifyBackup",
            "ChooseDeploy",
            "DeployLambda",
            "RestoreTargets",
        ],
    ] {
        let aws = FakeAws::new().answer("states:GetExecutionHistory", history(&states));
        let ctx = context(&aws, guarded(Config::new("backups", "backstop")));
        for status in ["FAILED", "TIMED_OUT", "ABORTED"] {
            let out = block_on(guard::handle(
                &ctx,
                ended(&ctx, backup, status, Some("States.Runtime")),
            ))
            .unwrap();
            assert!(
                matches!(out, GuardOutcome::Ignored { .. }),
                "{states:?}: {out:?}"
            );
        }
        assert!(
            aws.calls()
                .iter()
                .all(|c| c == "states:GetExecutionHistory"),
            "{:?}",
            aws.calls()
        );
    }
}

/// One pipeline execution, backups of two applications: guard never guesses which one the
/// failed stage protects. Without the stage's application in BACKSTOP_GUARD_STAGES it is
/// `InvalidInput` naming both; with it, only that application's backup counts (another
/// application's backup of the same execution never shadows it).
#[test]
fn mocked_two_applications_backed_up_in_one_pipeline_execution_need_the_stages_application() {
    let aws = FakeAws::new().accepting_events();
    let ctx = context(&aws, guarded(Config::new("backups", "backstop")));
    let event = stage("shop-pipeline", "Deploy", "FAILED");
    let execution = event.detail.execution_id.clone();
    let run = |app: &str| {
        backstop_core::model::run::RunDocument::from_json(
            &json!({
                "application": app,
                "version": {"pipeline_execution_id": execution},
                "targets": [{"type": "database", "url_env": "SHOP_DB_URL"}]
            })
            .to_string(),
        )
        .unwrap()
    };
    for (app, id) in [
        ("shop", "20261102T000000Z-00000002"),
        ("billing", "20261102T000000Z-00000003"),
    ] {
        let mut m = manifest(app, id, day(2), BackupState::Completed);
        m.run = Some(run(app));
        block_on(ctx.catalog().write_manifest(&m)).unwrap();
        block_on(ctx.catalog().record_pipeline_execution(&execution, app, id)).unwrap();
    }
    let err = block_on(guard::handle_stage(&ctx, event.clone())).unwrap_err();
    assert_eq!(err.error_type(), "InvalidInput", "{err}");
    assert!(
        err.to_string().contains("billing, shop")
            && err.to_string().contains("pipeline:stage:application"),
        "{err}"
    );
    assert_eq!(aws.calls(), Vec::<String>::new(), "nothing started");

    // The stage protects an application that took no backup in this execution: nothing to
    // restore, whatever the others recorded.
    let mut config = guarded(Config::new("backups", "backstop"));
    config.guard =
        backstop_core::context::GuardConfig::parse("shop-pipeline:Deploy:stock").unwrap();
    let (ctx2, _) = crate::support::memory_context(aws.shared(), config);
    for app in ["shop", "billing"] {
        let id = if app == "shop" {
            "20261102T000000Z-00000002"
        } else {
            "20261102T000000Z-00000003"
        };
        let mut m = manifest(app, id, day(2), BackupState::Completed);
        m.run = Some(run(app));
        block_on(ctx2.catalog().write_manifest(&m)).unwrap();
        block_on(
            ctx2.catalog()
                .record_pipeline_execution(&execution, app, id),
        )
        .unwrap();
    }
    let out = block_on(guard::handle_stage(&ctx2, event)).unwrap();
    assert!(matches!(out, GuardOutcome::NoBackup { .. }), "{out:?}");
    assert_eq!(aws.calls(), ["events:PutEvents"]);
}
