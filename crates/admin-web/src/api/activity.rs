//! `/api/v1/domains/{domain}/users/{local}/activity`: what a customer did (last login and
//! delivery, retrieved and deleted in the last 30 days, the last 20 logins with why a failure
//! failed), over `provision::activity` like the user page and `pophost user show`.

use axum::Json;
use axum::extract::{Path, State};

use super::{ApiResult, ErrorBody, target};
use crate::provision::Actor;
use crate::provision::activity::{self as ops, ActivityJson};
use crate::state::AppState;

/// A user's activity.
#[utoipa::path(
    get,
    path = "/domains/{domain}/users/{local}/activity",
    operation_id = "getUserActivity",
    params(
        ("domain" = String, Path, description = "Domain name"),
        ("local" = String, Path, description = "Local part of the address (before the @)"),
    ),
    responses(
        (status = 200, description = "The user's activity", body = ActivityJson),
        (status = 404, description = "No such user in scope", body = ErrorBody),
    )
)]
pub(super) async fn get_activity(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
) -> ApiResult<Json<ActivityJson>> {
    let address = target(&actor, &d, &l)?;
    let activity = ops::user_activity(&state.roles, &actor, &address).await?;
    Ok(Json(ActivityJson::new(&address, &activity)))
}

#[cfg(test)]
mod tests {
    use mailstore::{Address, FailureReason, LoginEvent, Transfer, UserActivity};
    use serde_json::Value;

    use super::ActivityJson;

    fn required(schema: &Value) -> Vec<String> {
        let mut keys: Vec<String> = schema["required"]
            .as_array()
            .expect("required")
            .iter()
            .map(|k| k.as_str().expect("key").to_string())
            .collect();
        keys.sort();
        keys
    }

    fn sent(value: &Value) -> Vec<String> {
        let mut keys: Vec<String> = value.as_object().expect("object").keys().cloned().collect();
        keys.sort();
        keys
    }

    /// As for the other resources (see `response_schemas_require_exactly_the_fields_sent`): a
    /// client generated from the document may rely on every field sent, null or not.
    #[test]
    fn the_activity_schemas_require_exactly_the_fields_sent() {
        let (_, doc) = super::super::routes();
        let doc = serde_json::to_value(&doc).expect("document");
        let schemas = &doc["components"]["schemas"];
        let failed = LoginEvent {
            at: 1,
            ip: None,
            mechanism: "USER".into(),
            tls: false,
            failure: Some(FailureReason::WrongPassword),
        };
        let activity = UserActivity {
            last_login: None,
            last_delivery: None,
            retrieved: Transfer::default(),
            deleted: Transfer::default(),
            logins: vec![failed],
        };
        let address = Address::parse("john@example.com").expect("address");
        let json = serde_json::to_value(ActivityJson::new(&address, &activity)).expect("json");
        assert_eq!(required(&schemas["UserActivity"]), sent(&json));
        assert_eq!(required(&schemas["LoginEvent"]), sent(&json["logins"][0]));
        assert_eq!(json["logins"][0]["reason"], "wrong_password");
        assert_eq!(json["logins"][0]["reason_text"], "wrong password");
        let path = &doc["paths"]["/domains/{domain}/users/{local}/activity"]["get"];
        assert_eq!(path["operationId"], "getUserActivity");
    }
}
