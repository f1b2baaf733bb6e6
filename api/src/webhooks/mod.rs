//! Webhook receivers. The request path does the minimum: size limit,
//! verify the signature on the raw bytes, persist the raw event durably,
//! enqueue it, answer 200. Platforms retry; a retry of the same body is
//! recognised by its hash and stored once. A channel that took a delivery
//! is remembered, so the next one costs a single statement (`known`); for
//! a remembered channel the body is read before its status is known, so
//! one paused since may answer 413 or 400 where it would otherwise
//! answer 409 first.
//!
//! Answers: 200 accepted or duplicate; 401 unsigned, mis-signed or stale
//! (nothing stored); 404 unknown channel; 405 a polled FEED channel;
//! 409 paused channel (nothing stored; unless the agency has another
//! active channel of its kind under the same secret, see
//! `serves_siblings`); 410 disconnected channel;
//! 413 body over the limit.

use crate::graphql::channels::kind_of;
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use rapport_domain::crypto::sha256_hex;
use rapport_domain::ingest::ChannelKind;
use rapport_domain::ingest::signature::{
    self, GENERIC_HEADER, META_HEADER, SignatureError, X_HEADER,
};
use rapport_store::entities::channel;
use rapport_store::jobs;
use rapport_store::raw_events::{self, NewRawEvent};
use sea_orm::EntityTrait;
use serde_json::json;
use std::collections::HashMap;
use std::time::Instant;
use uuid::Uuid;

pub mod known;

use known::KnownChannel;

const ACTIVE: &str = "ACTIVE";

fn answer(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "status": code, "message": message }))
}

fn reject(reason: &'static str, status: StatusCode, message: &str) -> HttpResponse {
    metrics::counter!("rapport_webhook_rejected_total", "reason" => reason).increment(1);
    tracing::warn!(reason, "webhook rejected");
    answer(status, reason, message)
}

/// A channel secret that cannot be decrypted: never verify against an empty
/// key (any body "signed" with "" would pass); 503 so the platform retries
/// once `RAPPORT_SECRET_KEY` is put right.
fn secret_unavailable() -> HttpResponse {
    reject(
        "secret_unavailable",
        StatusCode::SERVICE_UNAVAILABLE,
        "the channel's signing secret cannot be read; retry later",
    )
}

/// 500: a stored channel kind this build does not know (a data error).
fn internal() -> HttpResponse {
    answer(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
}

fn unknown_channel() -> HttpResponse {
    reject("unknown_channel", StatusCode::NOT_FOUND, "no such channel")
}

/// The channel a delivery is checked against.
enum Receiving {
    /// Remembered from an earlier delivery: the insert reads it again.
    Known(KnownChannel),
    /// Read from the database for this delivery, with its parsed kind.
    Read(Box<channel::Model>, ChannelKind),
}

impl Receiving {
    fn kind(&self) -> ChannelKind {
        match self {
            Receiving::Known(k) => k.kind,
            Receiving::Read(_, kind) => *kind,
        }
    }

    fn sealed(&self) -> Option<&[u8]> {
        match self {
            Receiving::Known(k) => Some(&k.sealed),
            Receiving::Read(c, _) => c.secret_ciphertext.as_deref(),
        }
    }
}

/// The channel a delivery names, read from the database and refused when
/// it may not take deliveries (`channel_for`) or its kind is unknown.
async fn read_channel(state: &AppState, raw_id: &str) -> Result<Receiving, HttpResponse> {
    metrics::counter!("rapport_webhook_channel_lookups_total", "from" => "database").increment(1);
    let c = channel_for(state, raw_id, false).await?;
    let Ok(kind) = kind_of(&c) else {
        return Err(internal());
    };
    Ok(Receiving::Read(Box::new(c), kind))
}

/// A remembered channel that no longer signs or stores: forgotten, and
/// read afresh.
async fn read_again(state: &AppState, id: Uuid, raw_id: &str) -> Result<Receiving, HttpResponse> {
    state.known_channels.forget(&id);
    read_channel(state, raw_id).await
}

/// Remembers a channel read from the database if it takes deliveries
/// under a secret of its own (see `known`).
fn remember_if_active(state: &AppState, c: &channel::Model, kind: ChannelKind) {
    if let (ACTIVE, Some(sealed)) = (c.status.as_str(), &c.secret_ciphertext) {
        state.known_channels.remember(
            c.id,
            KnownChannel {
                kind,
                sealed: sealed.clone(),
            },
        );
    }
}

/// The channel a webhook URL names, refused when it may not take
/// deliveries. A `verifying` request (CRC, hub challenge) stores nothing and
/// is answered for a paused channel too: X repeats its CRC check about
/// hourly and disables a webhook that fails it, so a paused channel would
/// receive nothing after it is resumed.
async fn channel_for(
    state: &AppState,
    raw_id: &str,
    verifying: bool,
) -> Result<channel::Model, HttpResponse> {
    let id = Uuid::parse_str(raw_id).map_err(|_| unknown_channel())?;
    let c = channel::Entity::find_by_id(id)
        .one(&state.db)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "loading a webhook channel failed");
            answer(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "try again")
        })?
        .ok_or_else(unknown_channel)?;
    match c.status.as_str() {
        "PAUSED" if verifying => Ok(c),
        "PAUSED" if serves_siblings(state, &c).await? => Ok(c),
        "PAUSED" => Err(reject(
            "paused",
            StatusCode::CONFLICT,
            "channel is paused; the event was not stored",
        )),
        "DISCONNECTED" => Err(reject(
            "disconnected",
            StatusCode::GONE,
            "channel is disconnected",
        )),
        _ => Ok(c),
    }
}

/// Whether a paused channel's URL still receives: one Meta app or X
/// environment calls one URL for all its pages or users, so while the
/// agency has another active channel of the kind under the same secret
/// (the same app), the paused channel's deliveries are taken (the worker
/// routes the other accounts' entries to those channels and drops the
/// paused one's own). Pausing the channel whose URL was registered must
/// not silence its siblings.
async fn serves_siblings(state: &AppState, c: &channel::Model) -> Result<bool, HttpResponse> {
    use sea_orm::{ColumnTrait, QueryFilter, QuerySelect};
    if !matches!(c.kind.as_str(), "X" | "FACEBOOK" | "INSTAGRAM") {
        return Ok(false);
    }
    let secrets: Vec<Option<Vec<u8>>> = channel::Entity::find()
        .select_only()
        .column(channel::Column::SecretCiphertext)
        .filter(channel::Column::AgencyId.eq(c.agency_id))
        .filter(channel::Column::Kind.eq(&c.kind))
        .filter(channel::Column::Status.eq(ACTIVE))
        .filter(channel::Column::Id.ne(c.id))
        .into_tuple()
        .all(&state.db)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "looking for a paused channel's siblings failed");
            answer(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "try again")
        })?;
    // Unreadable, it is unreadable for the signature check too: retry.
    let Some(own) = open(state, c.secret_ciphertext.as_deref()) else {
        return Err(secret_unavailable());
    };
    Ok(secrets
        .iter()
        .any(|s| rapport_store::secrets::same(Some(&own), open(state, s.as_deref()).as_deref())))
}

fn open(state: &AppState, sealed: Option<&[u8]>) -> Option<Vec<u8>> {
    rapport_store::secrets::opened(&state.secrets, sealed)
}

/// GET: the platforms' ownership checks (X CRC, Meta hub challenge).
pub async fn verify(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let c = match channel_for(&state, &path, true).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let Ok(kind) = kind_of(&c) else {
        return internal();
    };
    match kind {
        ChannelKind::X => {
            let Some(raw) = query.get("crc_token") else {
                return answer(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "crc_token is required",
                );
            };
            let Ok(token) = signature::CrcToken::parse(raw) else {
                return answer(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "crc_token must be 1 to 256 letters, digits or +/=_-.~",
                );
            };
            let Some(secret) = open(&state, c.secret_ciphertext.as_deref()) else {
                return secret_unavailable();
            };
            HttpResponse::Ok()
                .json(json!({ "response_token": signature::x_crc_response(&secret, &token) }))
        }
        ChannelKind::Facebook | ChannelKind::Instagram => {
            let expected = open(&state, c.verify_token_ciphertext.as_deref()).unwrap_or_default();
            let given = query
                .get("hub.verify_token")
                .map(String::as_bytes)
                .unwrap_or_default();
            let ok = query.get("hub.mode").map(String::as_str) == Some("subscribe")
                && !expected.is_empty()
                && rapport_domain::crypto::same_secret(&expected, given);
            match (ok, query.get("hub.challenge")) {
                (true, Some(challenge)) => HttpResponse::Ok()
                    .content_type("text/plain")
                    .body(challenge.clone()),
                _ => reject(
                    "bad_verify_token",
                    StatusCode::FORBIDDEN,
                    "verify token does not match",
                ),
            }
        }
        _ => answer(
            StatusCode::METHOD_NOT_ALLOWED,
            "not_webhook",
            "this channel has no verification step",
        ),
    }
}

/// POST: a platform delivers events.
pub async fn receive(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    mut payload: web::Payload,
) -> HttpResponse {
    let started = Instant::now();
    let limit = state.settings.max_webhook_bytes;
    let too_large = || {
        reject(
            "too_large",
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body exceeds {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large();
    }
    let Ok(id) = Uuid::parse_str(&path) else {
        return unknown_channel();
    };
    let mut channel = match state.known_channels.get(&id) {
        Some(known) => {
            metrics::counter!("rapport_webhook_channel_lookups_total", "from" => "memory")
                .increment(1);
            Receiving::Known(known)
        }
        None => match read_channel(&state, &path).await {
            Ok(read) => read,
            Err(resp) => return resp,
        },
    };
    // Before the body is read: a FEED channel takes none.
    if channel.kind() == ChannelKind::Feed {
        return answer(
            StatusCode::METHOD_NOT_ALLOWED,
            "not_webhook",
            "FEED channels are polled, not pushed",
        );
    }
    // Reserved as declared only up to 64 KiB: a declared length is not
    // yet a body.
    let mut body = Vec::with_capacity(declared.unwrap_or(1024).min(limit).min(64 * 1024));
    let read = async {
        while let Some(chunk) = payload.next().await {
            let Ok(chunk) = chunk else {
                return Err(answer(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "could not read the body",
                ));
            };
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match tokio::time::timeout(state.settings.body_deadline, read).await {
        Ok(Ok(())) => {}
        Ok(Err(resp)) => return resp,
        Err(_) => {
            return answer(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "the body did not arrive in time",
            );
        }
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let kept = |paused: bool| -> serde_json::Value {
        [
            "content-type",
            "user-agent",
            X_HEADER,
            META_HEADER,
            GENERIC_HEADER,
        ]
        .iter()
        .filter_map(|h| header(h).map(|v| (h.to_string(), json!(v))))
        .chain(paused.then(|| (raw_events::RECEIVED_PAUSED.to_string(), json!(true))))
        .collect::<serde_json::Map<_, _>>()
        .into()
    };
    let unavailable = |e: rapport_store::StoreError| {
        tracing::error!(error = %e, "persisting a webhook failed");
        // 503 so the platform retries: nothing was stored.
        answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "not stored; retry",
        )
    };
    let dedup_key = sha256_hex(&body);
    // At most twice: a remembered channel that no longer matches (a new
    // secret, paused, disconnected) is read again and checked as usual.
    let (kind, raw_id, fresh) = loop {
        let kind = channel.kind();
        let Some(secret) = open(&state, channel.sealed()) else {
            return secret_unavailable();
        };
        let checked: Result<(), SignatureError> = match kind {
            ChannelKind::X => signature::verify_x(&secret, &body, header(X_HEADER)),
            ChannelKind::Facebook | ChannelKind::Instagram => {
                signature::verify_meta(&secret, &body, header(META_HEADER))
            }
            ChannelKind::Generic => signature::verify_generic(
                &secret,
                &body,
                header(GENERIC_HEADER),
                chrono::Utc::now().timestamp(),
            ),
            ChannelKind::Feed => Err(SignatureError::Missing),
        };
        match (&channel, checked) {
            (Receiving::Known(_), Err(_)) => {
                channel = match read_again(&state, id, &path).await {
                    Ok(read) => read,
                    Err(resp) => return resp,
                };
            }
            (Receiving::Read(c, _), Err(e)) => {
                // Still remembered: mis-signed requests to a known URL
                // must not make every good delivery read the channel.
                remember_if_active(&state, c, kind);
                return reject(
                    match e {
                        SignatureError::Missing => "signature_missing",
                        SignatureError::Malformed => "signature_malformed",
                        SignatureError::Mismatch => "signature_mismatch",
                        SignatureError::Stale => "signature_stale",
                    },
                    StatusCode::UNAUTHORIZED,
                    &e.to_string(),
                );
            }
            (Receiving::Known(known), Ok(())) => {
                let checked = raw_events::CheckedChannel {
                    id,
                    kind: kind.as_str(),
                    secret_ciphertext: &known.sealed,
                };
                match raw_events::persist_if_unchanged(
                    &state.db,
                    checked,
                    dedup_key.clone(),
                    kept(false),
                    &body,
                )
                .await
                {
                    Ok(Some(raw_id)) => break (kind, raw_id, true),
                    // Changed since, or a retry of a stored event.
                    Ok(None) => {
                        channel = match read_again(&state, id, &path).await {
                            Ok(read) => read,
                            Err(resp) => return resp,
                        };
                    }
                    Err(e) => return unavailable(e),
                }
            }
            (Receiving::Read(c, _), Ok(())) => {
                let persisted = raw_events::persist(
                    &state.db,
                    NewRawEvent {
                        agency_id: c.agency_id,
                        channel_id: c.id,
                        workspace_id: c.workspace_id,
                        dedup_key,
                        headers: kept(c.status == "PAUSED"),
                        body,
                    },
                )
                .await;
                let (raw_id, fresh) = match persisted {
                    Ok(r) => r,
                    Err(e) => return unavailable(e),
                };
                remember_if_active(&state, c, kind);
                break (kind, raw_id, fresh);
            }
        }
    };
    if fresh {
        // Stored durably already: if Redis is down, the reconciler enqueues it later.
        if let Err(e) =
            jobs::enqueue(&state.kv, jobs::INGEST, &json!({ "raw_event_id": raw_id })).await
        {
            tracing::warn!(error = %e, raw_event = %raw_id, "enqueue failed; the reconciler will pick it up");
        }
    }
    metrics::counter!("rapport_webhook_accepted_total", "kind" => kind.as_str(), "duplicate" => (!fresh).to_string())
        .increment(1);
    metrics::histogram!("rapport_webhook_seconds").record(started.elapsed().as_secs_f64());
    HttpResponse::Ok().json(json!({ "status": if fresh { "accepted" } else { "duplicate" } }))
}
