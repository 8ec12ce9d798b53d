//! Which AWS actions each function may call: one table, `permissions.json`, that every call
//! site checks before it sends (an action its function's row does not list is
//! `PermissionMissing`, as the role would refuse it) and that the template's roles are checked
//! against (`tests/iam/check_roles.py`, part of `make validate`). The function is the one whose
//! handler runs ([`as_function`], set by `tasks::serve_json`); code that runs for no function
//! (the CLI, with the operator's credentials) is not checked. Work spawned onto another task
//! (the upload's parts) runs unchecked; its actions are listed all the same.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::OnceLock;

use crate::error::Error;

/// The table: function name → IAM actions (`service:Action`).
pub const TABLE_JSON: &str = include_str!("permissions.json");

tokio::task_local! {
    static FUNCTION: String;
}

fn table() -> &'static BTreeMap<String, BTreeSet<String>> {
    static TABLE: OnceLock<BTreeMap<String, BTreeSet<String>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let raw: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(TABLE_JSON).unwrap_or_default();
        raw.into_iter()
            .filter(|(k, _)| !k.starts_with('_'))
            .map(|(k, v)| {
                let actions = v
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                (k, actions)
            })
            .collect()
    })
}

/// The actions `function` may call, when the table has a row for it.
pub fn actions_of(function: &str) -> Option<&'static BTreeSet<String>> {
    table().get(function)
}

/// Runs `work` as `function`'s handler: its calls are checked against its row.
pub async fn as_function<F: Future>(function: &str, work: F) -> F::Output {
    FUNCTION.scope(function.to_string(), work).await
}

/// `Ok` when the running function's row lists `action` (or no function is running);
/// `PermissionMissing` otherwise.
pub fn check(action: &str) -> Result<(), Error> {
    let Ok(function) = FUNCTION.try_with(Clone::clone) else {
        return Ok(());
    };
    match actions_of(&function) {
        Some(actions) if actions.contains(action) => Ok(()),
        _ => Err(Error::PermissionMissing {
            function,
            action: action.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_holds_only_service_actions() {
        // Which functions it names is checked against the template (tests/iam/check_roles.py).
        assert_eq!(table().len(), 8);
        for (f, actions) in table() {
            for a in actions {
                let (service, action) = a.split_once(':').unwrap_or_default();
                assert!(
                    !service.is_empty() && action.chars().next().is_some_and(char::is_uppercase),
                    "{f}: {a}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_call_its_function_may_not_make_is_refused_and_the_cli_is_not_checked() {
        assert!(
            check("ec2:TerminateInstances").is_ok(),
            "no function: not checked"
        );
        let refused = as_function("verify", async { check("ec2:TerminateInstances") }).await;
        assert_eq!(refused.unwrap_err().error_type(), "PermissionMissing");
        let allowed = as_function("verify", async { check("s3:GetObject") }).await;
        assert!(allowed.is_ok());
    }
}
