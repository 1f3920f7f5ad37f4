//! Re-download alarms (issue 21, item 3): `/api/v1/alarms` (the last 7 days in the token's
//! scope, as on the dashboard) and `/api/v1/domains/{domain}/users/{local}/alarms` (one user's,
//! as on the user page), over `provision::alarms`.

use axum::Json;
use axum::extract::{Path, State};

use super::{ApiResult, ErrorBody, target};
use crate::provision::Actor;
use crate::provision::alarms::{self as ops, AlarmJson};
use crate::state::AppState;

/// The newest re-download alarms of the last 7 days in scope, newest first.
#[utoipa::path(
    get,
    path = "/alarms",
    operation_id = "listAlarms",
    responses(
        (status = 200, description = "Alarms, newest first", body = Vec<AlarmJson>),
    )
)]
pub(super) async fn list_alarms(
    State(state): State<AppState>,
    actor: Actor,
) -> ApiResult<Json<Vec<AlarmJson>>> {
    let alarms = ops::recent_alarms(&state.roles, &actor, state.now()).await?;
    Ok(Json(alarms.iter().map(AlarmJson::from).collect()))
}

/// A user's newest re-download alarms, newest first.
#[utoipa::path(
    get,
    path = "/domains/{domain}/users/{local}/alarms",
    operation_id = "getUserAlarms",
    params(
        ("domain" = String, Path, description = "Domain name"),
        ("local" = String, Path, description = "Local part of the address (before the @)"),
    ),
    responses(
        (status = 200, description = "The user's alarms, newest first", body = Vec<AlarmJson>),
        (status = 404, description = "No such user in scope", body = ErrorBody),
    )
)]
pub(super) async fn get_user_alarms(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
) -> ApiResult<Json<Vec<AlarmJson>>> {
    let address = target(&actor, &d, &l)?;
    let alarms = ops::user_alarms(&state.roles, &actor, &address).await?;
    Ok(Json(alarms.iter().map(AlarmJson::from).collect()))
}

#[cfg(test)]
mod tests {
    use mailstore::{Address, Alarm, AlarmKind};
    use serde_json::Value;

    use super::AlarmJson;

    fn sorted(keys: impl Iterator<Item = String>) -> Vec<String> {
        let mut keys: Vec<String> = keys.collect();
        keys.sort();
        keys
    }

    /// As for the other resources: a client generated from the document may rely on every
    /// field sent, null or not.
    #[test]
    fn the_alarm_schema_requires_exactly_the_fields_sent() {
        let (_, doc) = super::super::routes();
        let doc = serde_json::to_value(&doc).expect("document");
        let schema = &doc["components"]["schemas"]["Alarm"];
        let alarm = Alarm {
            address: Address::parse("john@example.com").expect("address"),
            kind: AlarmKind::Redownload,
            at: 1,
            count: 1204,
            ip: Some("192.0.2.7".into()),
            mechanism: None,
            previous_ip: None,
        };
        let json = serde_json::to_value(AlarmJson::from(&alarm)).expect("json");
        let required = schema["required"].as_array().expect("required");
        assert_eq!(
            sorted(
                required
                    .iter()
                    .map(|k| k.as_str().expect("key").to_string())
            ),
            sorted(json.as_object().expect("object").keys().cloned())
        );
        assert_eq!(json["kind"], "redownload");
        assert_eq!(
            json["text"],
            Value::from("re-downloaded 1,204 messages from a new client (192.0.2.7)")
        );
        for (path, id) in [
            ("/alarms", "listAlarms"),
            ("/domains/{domain}/users/{local}/alarms", "getUserAlarms"),
        ] {
            assert_eq!(doc["paths"][path]["get"]["operationId"], id);
        }
    }
}
