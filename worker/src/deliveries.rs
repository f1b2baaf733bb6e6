//! Outgoing webhooks, delivery side: posts queued deliveries, signed, with
//! exponential backoff between attempts; every attempt's outcome stays on
//! the delivery row (the delivery log).
//!
//! Each request is `POST <url>` with the JSON payload and headers
//! `X-Rapport-Event`, `X-Rapport-Delivery` (stable across retries: an
//! idempotency key for the receiver) and `X-Rapport-Signature:
//! t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.

use crate::egress;
use chrono::{SubsecRound, Utc};
use rapport_domain::crypto::SecretBox;
use rapport_domain::ingest::signature::generic_sign;
use rapport_domain::retry::Backoff;
use rapport_store::entities::{webhook_delivery, webhook_subscription};
use rapport_store::outbox::{DELIVERED, FAILED, PENDING};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    pub tick: Duration,
    pub backoff: Backoff,
    pub timeout: Duration,
    /// Deliveries attempted per pass, at most [`PER_SUBSCRIPTION`] of any
    /// one subscription, the agencies taking turns, and within each its
    /// subscriptions.
    pub batch: u64,
    /// Deliveries sent at once: an endpoint that never answers holds one
    /// for `timeout`, not the pass.
    pub concurrency: usize,
    /// Whether subscription URLs may reach private addresses
    /// (`RAPPORT_ALLOW_PRIVATE_URLS`; see crate::egress).
    pub allow_private: bool,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(1),
            backoff: Backoff {
                base: Duration::from_secs(10),
                max: Duration::from_secs(3600),
                max_attempts: 10,
            },
            timeout: Duration::from_secs(10),
            batch: 50,
            concurrency: 8,
            allow_private: false,
        }
    }
}

/// The error of a delivery whose subscription is gone: final, not retried.
const SUBSCRIPTION_GONE: &str = "the subscription no longer exists";

/// Deliveries of one subscription attempted per pass, at most.
pub const PER_SUBSCRIPTION: u64 = 10;

pub struct Deliverer {
    db: DatabaseConnection,
    secrets: Arc<SecretBox>,
    http: reqwest::Client,
    cfg: DeliveryConfig,
}

impl Deliverer {
    pub fn new(
        db: DatabaseConnection,
        secrets: Arc<SecretBox>,
        cfg: DeliveryConfig,
    ) -> anyhow::Result<Self> {
        let http = egress::guarded(
            reqwest::Client::builder()
                .timeout(cfg.timeout)
                .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
                .user_agent(concat!("Rapport-Webhooks/", env!("CARGO_PKG_VERSION"))),
            cfg.allow_private,
        )
        .build()?;
        Ok(Self {
            db,
            secrets,
            http,
            cfg,
        })
    }

    /// Sends due deliveries once each; returns how many were attempted.
    /// The agencies waiting longest come first and take turns, and within
    /// each its subscriptions waiting longest, taking turns, each with at
    /// most [`PER_SUBSCRIPTION`] of its deliveries; sent `concurrency` at a
    /// time: one agency's backlog to a dead endpoint, however many
    /// subscriptions it spreads over, does not hold back everyone else's.
    pub async fn tick(&self) -> anyhow::Result<usize> {
        use futures_util::StreamExt;
        use sea_orm::sea_query::Func;
        let now = Utc::now();
        let due_now = || {
            webhook_delivery::Entity::find()
                .filter(webhook_delivery::Column::Status.eq(PENDING))
                .filter(webhook_delivery::Column::NextAttemptAt.lte(now))
        };
        let oldest_first = || Func::min(Expr::col(webhook_delivery::Column::NextAttemptAt));
        let agencies: Vec<uuid::Uuid> = due_now()
            .select_only()
            .column(webhook_delivery::Column::AgencyId)
            .group_by(webhook_delivery::Column::AgencyId)
            .order_by_asc(oldest_first())
            .limit(self.cfg.batch)
            .into_tuple()
            .all(&self.db)
            .await?;
        if agencies.is_empty() {
            return Ok(0);
        }
        // Each agency's share of a pass at most, whatever another's
        // backlog (one query for all would let an agency with thousands of
        // due subscriptions fill it).
        let share = self.cfg.batch.div_ceil(agencies.len() as u64);
        let mut subscriptions: Vec<(uuid::Uuid, uuid::Uuid)> = Vec::new();
        for agency in agencies {
            let subs: Vec<uuid::Uuid> = due_now()
                .filter(webhook_delivery::Column::AgencyId.eq(agency))
                .select_only()
                .column(webhook_delivery::Column::SubscriptionId)
                .group_by(webhook_delivery::Column::SubscriptionId)
                .order_by_asc(oldest_first())
                .limit(share)
                .into_tuple()
                .all(&self.db)
                .await?;
            subscriptions.extend(subs.into_iter().map(|s| (agency, s)));
        }
        let mut subscriptions = crate::fair::in_turn(subscriptions, |(agency, _)| *agency);
        subscriptions.truncate(self.cfg.batch as usize);
        let mut due = Vec::new();
        for (_, sub) in subscriptions {
            due.extend(
                due_now()
                    .filter(webhook_delivery::Column::SubscriptionId.eq(sub))
                    .order_by_asc(webhook_delivery::Column::NextAttemptAt)
                    .limit(PER_SUBSCRIPTION)
                    .all(&self.db)
                    .await?,
            );
        }
        // Subscriptions take turns within each agency, agencies in turn.
        let due = crate::fair::in_turn(due, |d| d.subscription_id);
        let mut due = crate::fair::in_turn(due, |d| d.agency_id);
        due.truncate(self.cfg.batch as usize);
        let attempts: Vec<anyhow::Result<bool>> = futures_util::stream::iter(due)
            .map(|d| self.attempt(d))
            .buffer_unordered(self.cfg.concurrency.max(1))
            .collect()
            .await;
        let mut attempted = 0;
        for a in attempts {
            attempted += usize::from(a?);
        }
        Ok(attempted)
    }

    /// Claims and sends one delivery, and records the outcome; false when
    /// another worker claimed it first.
    async fn attempt(&self, d: webhook_delivery::Model) -> anyhow::Result<bool> {
        // Claim by pushing the next attempt out (conditional on the row
        // being as read): another worker's tick skips it. The lease
        // counts from the claim, not from the start of the tick: a
        // batch of slow endpoints would otherwise claim its last rows
        // with leases already run out. To the microsecond, as stored,
        // so the outcome below can check the claim is still this one.
        let lease =
            (Utc::now() + chrono::Duration::from_std(self.cfg.timeout * 3)?).trunc_subsecs(6);
        let claimed = webhook_delivery::Entity::update_many()
            .col_expr(webhook_delivery::Column::NextAttemptAt, Expr::value(lease))
            .filter(webhook_delivery::Column::Id.eq(d.id))
            .filter(webhook_delivery::Column::Status.eq(PENDING))
            .filter(webhook_delivery::Column::NextAttemptAt.eq(d.next_attempt_at))
            .exec(&self.db)
            .await?;
        if claimed.rows_affected != 1 {
            return Ok(false);
        }
        let outcome = self.send(&d).await;
        let attempts = d.attempts + 1;
        // Recorded only while the claim is still ours: if the attempt
        // outlived its lease and another worker took the delivery over,
        // that worker's outcome stands (a late failure here must not
        // turn its DELIVERED back into PENDING).
        let mut q = webhook_delivery::Entity::update_many()
            .col_expr(webhook_delivery::Column::Attempts, Expr::value(attempts))
            .filter(webhook_delivery::Column::Id.eq(d.id))
            .filter(webhook_delivery::Column::Status.eq(PENDING))
            .filter(webhook_delivery::Column::NextAttemptAt.eq(lease));
        q = match &outcome {
            Ok(()) => q
                .col_expr(webhook_delivery::Column::Status, Expr::value(DELIVERED))
                .col_expr(
                    webhook_delivery::Column::DeliveredAt,
                    Expr::value(Utc::now()),
                )
                .col_expr(
                    webhook_delivery::Column::LastError,
                    Expr::value(Option::<String>::None),
                ),
            Err(e) => {
                // A subscription deleted or turned off ends its deliveries:
                // retrying cannot bring it back.
                let next = self
                    .cfg
                    .backoff
                    .after(attempts)
                    .filter(|_| !e.starts_with(SUBSCRIPTION_GONE));
                let gave_up = next.is_none();
                tracing::warn!(delivery = %d.id, attempts, error = %e, gave_up, "webhook delivery failed");
                q.col_expr(webhook_delivery::Column::LastError, Expr::value(e.clone()))
                    .col_expr(
                        webhook_delivery::Column::Status,
                        Expr::value(if gave_up { FAILED } else { PENDING }),
                    )
                    .col_expr(
                        webhook_delivery::Column::NextAttemptAt,
                        Expr::value(
                            Utc::now() + chrono::Duration::from_std(next.unwrap_or_default())?,
                        ),
                    )
            }
        };
        if q.exec(&self.db).await?.rows_affected != 1 {
            tracing::warn!(delivery = %d.id, "a delivery attempt outlived its claim; its outcome is not recorded");
        }
        metrics::counter!("rapport_webhook_deliveries_total", "ok" => outcome.is_ok().to_string())
            .increment(1);
        Ok(true)
    }

    async fn send(&self, d: &webhook_delivery::Model) -> Result<(), String> {
        let sub = webhook_subscription::Entity::find_by_id(d.subscription_id)
            .one(&self.db)
            .await
            .map_err(|e| e.to_string())?
            .ok_or(format!("{SUBSCRIPTION_GONE} (deleted)"))?;
        if !sub.active {
            return Err(format!("{SUBSCRIPTION_GONE} (deleted or turned off)"));
        }
        let secret = self
            .secrets
            .open(&sub.secret_ciphertext)
            .map_err(|e| e.to_string())?;
        let url =
            egress::target(&sub.url, self.cfg.allow_private).map_err(|e| format!("POST {e}"))?;
        let body = serde_json::to_vec(&d.payload).map_err(|e| e.to_string())?;
        let signature = generic_sign(&secret, &body, Utc::now().timestamp());
        let resp = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("x-rapport-event", &d.event_type)
            .header("x-rapport-delivery", d.id.to_string())
            .header("x-rapport-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("POST {}: {}", sub.url, egress::describe(&e)))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("POST {} answered {}", sub.url, resp.status()))
        }
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "webhook delivery pass failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.tick) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
