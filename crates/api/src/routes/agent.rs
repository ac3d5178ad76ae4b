//! Requests only an agent can carry out (restart, reinit): for this member
//! over the link, for another forwarded to its API, once: a forwarded
//! request that reaches a member other than the one it names is refused,
//! so an `api_url` that leads back cannot loop.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tokio::sync::oneshot;

use super::{json_body, AppState};
use crate::client::{Call, HOPS_HEADER};
use crate::error::HttpError;
use crate::local::{AgentRequest, Request};
use crate::model::MemberRequest;

/// How long the agent may take to accept or refuse a request (it answers
/// once the action is done or started).
const AGENT_ANSWER: Duration = Duration::from_secs(120);

/// A request is forwarded at most this often: to the member it names,
/// which carries it out.
pub(super) const MAX_HOPS: u32 = 1;

pub async fn restart(
    state: State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    handle(state, headers, body, Request::Restart).await
}

pub async fn reinit(
    state: State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    handle(state, headers, body, Request::Reinit).await
}

fn path(request: Request) -> &'static str {
    match request {
        Request::Restart => "/restart",
        Request::Reinit => "/reinit",
        Request::Retire => "/remove",
    }
}

async fn handle(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
    request: Request,
) -> Result<Response, HttpError> {
    let asked: MemberRequest = json_body(&body)?;
    let member = asked.member.unwrap_or_else(|| state.member.clone());
    if member == state.member {
        return ask_agent(&state, request).await;
    }
    store::cluster::check_name("member name", &member)
        .map_err(|e| HttpError::bad_request(e.to_string()))?;
    let hops = forward_hops(&headers, &state, &member)?;
    let Some(status) = state
        .keys
        .member(&member)?
        .get(state.store.as_ref())
        .await?
    else {
        return Err(HttpError::not_found(format!(
            "there is no member {member} (or its agent is down and its status expired); `pgwarden ctl list` shows the members"
        )));
    };
    forward(
        &state,
        &headers,
        &status.value.api_url,
        &member,
        request,
        hops + 1,
    )
    .await
}

/// The hop count a forwarding member sent; 0 from a client.
/// How often a request for `member` was forwarded already; refused once
/// it came the most hops a request may take (an api_url leading to the
/// wrong member, or back).
pub(super) fn forward_hops(
    headers: &HeaderMap,
    state: &AppState,
    member: &str,
) -> Result<u32, HttpError> {
    let hops = hops(headers)?;
    if hops >= MAX_HOPS {
        return Err(HttpError::new(
            StatusCode::LOOP_DETECTED,
            format!(
                "a request for {member} was forwarded to {here}, which is not {member}: {member}'s api_url \
                 leads to the wrong member (or back); check its api.listen and member.connect_address, \
                 or run the command against {member}'s API directly",
                here = state.member
            ),
        ));
    }
    Ok(hops)
}

fn hops(headers: &HeaderMap) -> Result<u32, HttpError> {
    let Some(value) = headers.get(HOPS_HEADER) else {
        return Ok(0);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| HttpError::bad_request(format!("{HOPS_HEADER} is not a whole number")))
}

pub(super) async fn ask_agent(state: &AppState, request: Request) -> Result<Response, HttpError> {
    let (reply, answer) = oneshot::channel();
    let agent_gone = || {
        HttpError::unavailable(format!(
            "the agent of {} is not taking requests (shutting down?); try again, or check its log",
            state.member
        ))
    };
    state
        .link
        .requests
        .send(AgentRequest { request, reply })
        .await
        .map_err(|_| agent_gone())?;
    match tokio::time::timeout(AGENT_ANSWER, answer).await {
        Err(_) => Err(HttpError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the agent of {} did not answer within {} s; check its log",
                state.member,
                AGENT_ANSWER.as_secs()
            ),
        )),
        Ok(Err(_)) => Err(agent_gone()),
        Ok(Ok(Ok(done))) => {
            Ok(Json(json!({ "member": state.member, "result": done })).into_response())
        }
        Ok(Ok(Err(refusal))) => Err(HttpError::conflict(refusal)),
    }
}

/// Sends the request to `member`'s API with the caller's token and relays
/// the answer as it is.
async fn forward(
    state: &AppState,
    headers: &HeaderMap,
    api_url: &str,
    member: &str,
    request: Request,
    hops: u32,
) -> Result<Response, HttpError> {
    let body = json!({ "member": member });
    forward_with(state, headers, api_url, member, request, &body, hops).await
}

/// [`forward`] with its own body.
pub(super) async fn forward_with(
    state: &AppState,
    headers: &HeaderMap,
    api_url: &str,
    member: &str,
    request: Request,
    body: &serde_json::Value,
    hops: u32,
) -> Result<Response, HttpError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
        .or_else(|| state.api.token.as_ref().map(|t| t.expose().to_string()));
    let call = Call {
        body: Some(body),
        token: token.as_deref(),
        hops: Some(hops),
        timeout: AGENT_ANSWER + Duration::from_secs(5),
        ..Call::new(Method::POST, api_url, path(request))
    };
    let reply = state.client.send(call).await.map_err(|e| {
        HttpError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "cannot forward to {member}: {e}; run the command against {member}'s API directly"
            ),
        )
    })?;
    Ok((
        reply.status,
        [(header::CONTENT_TYPE, "application/json")],
        reply.body,
    )
        .into_response())
}
