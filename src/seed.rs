//! `rapport seed`: fills a database with realistic demo data, through the
//! same code paths real traffic takes. Agencies, owners, workspaces, SLA
//! policies and reply templates go through the GraphQL schema in process
//! (so every rule applies); mentions go through the ingestion path in
//! batches (deduplication, authors, threading, sentiment, priority, SLA
//! deadlines). Authors follow a power law (a few loud ones, many quiet
//! ones, follower counts Pareto-distributed); texts mix complaints,
//! questions and praise; a third of the mentions continue a thread.
//! Replies are written straight to the store for a share of the
//! conversations (stopping their first-response clocks), not through the
//! canned-reply guard, which would rightly refuse generated text.

use anyhow::{Context, bail};
use chrono::{Duration, Utc};
use futures_util::StreamExt;
use rapport_api::auth::viewer::{Auth, authenticate};
use rapport_api::{AppState, graphql};
use rapport_domain::calendar::Clock;
use rapport_store::entities::{agency, conversation, message, workspace};
use rapport_store::import::{CHUNK, import_channel, import_chunk};
use rapport_store::tenancy::begin_for_agency;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect, Set, sea_query::Expr,
};
use serde_json::{Value, json};
use std::io::Write;
use std::time::Instant;
use uuid::Uuid;

pub struct SeedArgs {
    pub agencies: usize,
    pub workspaces_per_agency: usize,
    pub messages: usize,
    /// Share of conversations that get a reply, 0 to 100.
    pub replied_percent: u8,
    /// The generator's seed: the same seed gives the same data (texts,
    /// authors, followers, threads, which conversations are answered; ids,
    /// dates and owner e-mails differ); none picks one from the clock.
    pub seed: Option<u64>,
}

/// Workspaces filled at once.
const SEED_CONCURRENCY: usize = 4;

/// The password every seeded owner gets (printed at the end).
pub const DEMO_PASSWORD: &str = "rapport-demo-password";

/// Ends the name of a demo agency until its seeding has finished: an
/// interrupted run leaves agencies that say so (in the app too), and
/// `dev --demo` refuses to serve them as a demo.
pub const SEEDING_MARK: &str = " (seeding)";

/// A small deterministic generator: the same seed gives the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        unit_of(self.next())
    }
    fn pick<'a>(&mut self, xs: &'a [&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

/// 64 random bits as a number in [0, 1).
fn unit_of(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// splitmix64's finaliser: neighbouring inputs, unrelated outputs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed an agency's authors draw from: the run's seed and the agency.
fn agency_seed(seed: u64, agency: usize) -> u64 {
    mix(seed ^ (agency as u64 + 1).wrapping_mul(0xd6e8_feb8_6659_fd93))
}

/// An author's follower count (Pareto, from 10 up): a function of the
/// agency's seed and the author alone. An author is one row per agency,
/// shared by its workspaces, which are filled concurrently: a count drawn
/// per message would leave whichever workspace wrote last.
fn followers_of(agency_seed: u64, author: usize) -> u64 {
    let unit = unit_of(mix(
        agency_seed ^ (author as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    ));
    (10.0 / (1.0 - unit * 0.99999).powf(1.2)) as u64
}

const COMPLAINTS: &[&str] = &[
    "{brand} charged me twice and nobody answers, really disappointed",
    "my order from {brand} is two weeks late. Worst service ever!",
    "the {brand} app keeps crashing when I try to pay, so frustrating",
    "still waiting for my refund from {brand}, this is unacceptable",
    "{brand} delivered a broken item and support ignores me",
];
const QUESTIONS: &[&str] = &[
    "does {brand} ship to Canada?",
    "is the {brand} store on Main Street open on Sunday?",
    "how do I change the address on my {brand} order?",
    "can I return a {brand} gift without a receipt?",
];
const PRAISE: &[&str] = &[
    "love the new {brand} seasonal range, great job!",
    "{brand} support sorted my issue in minutes, thank you!",
    "best coffee in town, thanks {brand}",
];
const TIMEZONES: &[&str] = &[
    "Europe/Berlin",
    "America/New_York",
    "Europe/London",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Australia/Sydney",
];

async fn gql(
    schema: &graphql::RapportSchema,
    auth: Option<&Auth>,
    query: &str,
    vars: Value,
) -> anyhow::Result<Value> {
    let mut req =
        async_graphql::Request::new(query).variables(async_graphql::Variables::from_json(vars));
    req = match auth {
        Some(Auth::Member(v)) => req.data(Auth::Member(v.clone())),
        _ => req.data(Auth::Anonymous),
    };
    // Each call its own client: sign-up is rate limited per client address,
    // and a seeder creating a hundred agencies is not a client hammering it.
    let client = graphql::ClientIp(format!("seed:{}", uuid::Uuid::now_v7()));
    let resp = schema.execute(req.data(client)).await;
    if !resp.errors.is_empty() {
        bail!("{}: {:?}", query.lines().next().unwrap_or(""), resp.errors);
    }
    Ok(resp.data.into_json()?)
}

/// Progress on stderr: redrawn in place on a terminal; elsewhere (a log,
/// CI) a plain line every 5 seconds, not one `\r` per batch.
fn progress(done: usize, total: usize, started: Instant) {
    use std::io::IsTerminal;
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_LINE_SECS: AtomicU64 = AtomicU64::new(0);
    let width = 40;
    let filled = (done * width / total.max(1)).min(width);
    let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
    let line = format!(
        "[{}{}] {done}/{total} messages, {rate:.0}/s",
        "#".repeat(filled),
        " ".repeat(width - filled)
    );
    if std::io::stderr().is_terminal() {
        eprint!("\r{line}   ");
        let _ = std::io::stderr().flush();
        return;
    }
    let now = started.elapsed().as_secs();
    let last = LAST_LINE_SECS.load(Ordering::Relaxed);
    if done >= total || now >= last + 5 {
        LAST_LINE_SECS.store(now, Ordering::Relaxed);
        eprintln!("{line}");
    }
}

/// The most workspaces one seed makes (agencies × workspaces each).
const MAX_WORKSPACES: usize = 100_000;

/// Refuses sizes that cannot be meant, before anything is connected.
pub fn check(args: &SeedArgs) -> anyhow::Result<()> {
    if args.agencies == 0 || args.workspaces_per_agency == 0 {
        bail!("--agencies and --workspaces-per-agency must be at least 1");
    }
    if args
        .agencies
        .checked_mul(args.workspaces_per_agency)
        .is_none_or(|n| n > MAX_WORKSPACES)
    {
        bail!("--agencies × --workspaces-per-agency must be at most {MAX_WORKSPACES}");
    }
    Ok(())
}

pub async fn run(state: AppState, args: SeedArgs) -> anyhow::Result<()> {
    check(&args)?;
    let schema = graphql::build(Some(state.clone()), 12, 10_000);
    let db = state.db.clone();
    let workspaces = args.agencies * args.workspaces_per_agency;
    let per_ws = args.messages / workspaces;
    let extra = args.messages % workspaces;
    let started = Instant::now();
    let run_id = &Uuid::new_v4().simple().to_string()[..6];
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    // xorshift never leaves zero: mix the seed and keep a bit set.
    let mut rng = Rng((0x9e37_79b9_7f4a_7c15 ^ seed) | 1);
    let mut owners = Vec::new();
    let mut agencies = Vec::new();
    // Workspaces are created first (in order, through GraphQL), then
    // filled several at a time: PostgreSQL works one connection per core,
    // so one writer leaves the other core idle.
    let mut plans = Vec::new();
    for a in 0..args.agencies {
        let email = format!("owner+{run_id}-{a}@demo.rapport.test");
        let agency_name = format!("Demo Agency {}", a + 1);
        let d = gql(
            &schema,
            None,
            "mutation($i: SignUpInput!) { signUp(input: $i) { accessToken } }",
            json!({ "i": { "agencyName": format!("{agency_name}{SEEDING_MARK}"), "name": format!("Owner {}", a + 1),
                           "email": email, "password": DEMO_PASSWORD } }),
        )
        .await
        .context("signing up a demo agency")?;
        let token = d["signUp"]["accessToken"].as_str().unwrap_or_default();
        let auth = authenticate(&state, Some(&format!("Bearer {token}")))
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        owners.push(email);
        agencies.push((
            auth.viewer()
                .map_err(|e| anyhow::anyhow!("{}", e.message()))?
                .agency_id,
            agency_name,
        ));
        for w in 0..args.workspaces_per_agency {
            let brand = format!("Brand {}-{}", a + 1, w + 1);
            let d = gql(
                &schema,
                Some(&auth),
                "mutation($i: CreateWorkspaceInput!) { createWorkspace(input: $i) { id } }",
                json!({ "i": { "name": brand, "timezone": rng.pick(TIMEZONES), "brandKeywords": [brand.to_lowercase()],
                               "bannedPhrases": ["per our policy", "as per my last email"] } }),
            )
            .await?;
            let ws_gid = d["createWorkspace"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let t = |first: u32, resolution: u32| json!({ "firstResponseMinutes": first, "nextResponseMinutes": first, "resolutionMinutes": resolution });
            gql(
                &schema,
                Some(&auth),
                "mutation($i: CreateSlaPolicyInput!) { createSlaPolicy(input: $i) { id } }",
                json!({ "i": { "workspaceId": ws_gid, "name": "Standard", "isDefault": true,
                               "targets": { "urgent": t(15, 240), "high": t(30, 480), "normal": t(60, 1440), "low": t(240, 2880) },
                               "escalation": { "raisePriorityTo": "URGENT" } } }),
            )
            .await?;
            gql(
                &schema,
                Some(&auth),
                "mutation($i: CreateReplyTemplateInput!) { createReplyTemplate(input: $i) { id } }",
                json!({ "i": { "workspaceId": ws_gid, "name": "Acknowledge", "intent": "ACKNOWLEDGE",
                               "body": "Hi {{ author.name }}, {{ slot.empathy }} — {{ agent.first_name }} at {{ brand.name }}",
                               "slots": [{ "name": "empathy", "guidance": "Say what you understood of their problem", "minLength": 20 }] } }),
            )
            .await?;
            let ws_id = rapport_domain::GlobalId::decode(rapport_domain::Kind::Workspace, &ws_gid)
                .context("workspace id")?;
            let ws = workspace::Entity::find_by_id(ws_id)
                .one(&db)
                .await?
                .context("seeded workspace")?;
            let n = per_ws + usize::from(a * args.workspaces_per_agency + w < extra);
            plans.push((ws, brand, n, Rng(rng.next() | 1), agency_seed(seed, a)));
        }
    }
    let done = std::sync::atomic::AtomicUsize::new(0);
    let total = args.messages;
    let results: Vec<anyhow::Result<usize>> = futures_util::stream::iter(plans)
        .map(|(ws, brand, n, mut rng, authors_seed)| {
            let (db, done) = (&db, &done);
            async move {
                seed_messages(
                    db,
                    &ws,
                    &brand,
                    n,
                    &mut rng,
                    authors_seed,
                    done,
                    total,
                    started,
                )
                .await?;
                seed_replies(db, &ws, args.replied_percent, &mut rng).await
            }
        })
        .buffer_unordered(SEED_CONCURRENCY)
        .collect()
        .await;
    let mut replied = 0;
    for r in results {
        replied += r?;
    }
    let done = done.into_inner();
    progress(done, args.messages, started);
    eprintln!();
    if db.get_database_backend() == sea_orm::DbBackend::Postgres {
        // Threading updates each conversation and author once per message:
        // clean the dead row versions now, as autovacuum would in a while,
        // so the demo reads like a database that has been running.
        db.execute_unprepared("VACUUM (ANALYZE) conversations, authors, messages")
            .await
            .context("vacuum after seeding")?;
    }
    // Last: only now is each agency a whole demo.
    for (id, name) in agencies {
        let txn = begin_for_agency(&db, id).await?;
        agency::Entity::update_many()
            .col_expr(agency::Column::Name, Expr::value(name))
            .filter(agency::Column::Id.eq(id))
            .exec(&txn)
            .await
            .context("naming a seeded agency")?;
        txn.commit().await?;
    }
    println!(
        "seeded {} agencies, {workspaces} workspaces, {done} messages ({replied} conversations answered) in {:.1} s (--seed {seed})",
        args.agencies,
        started.elapsed().as_secs_f64()
    );
    println!(
        "sign in as {} (and the other owners: owner+{run_id}-<n>@demo.rapport.test) with password {DEMO_PASSWORD}",
        owners.first().map(String::as_str).unwrap_or("")
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn seed_messages(
    db: &sea_orm::DatabaseConnection,
    ws: &workspace::Model,
    brand: &str,
    n: usize,
    rng: &mut Rng,
    authors_seed: u64,
    done: &std::sync::atomic::AtomicUsize,
    total: usize,
    started: Instant,
) -> anyhow::Result<()> {
    let ch = import_channel(db, ws).await?;
    let authors = (n / 4).max(1);
    let now = Utc::now();
    let mut last_by_author: std::collections::HashMap<usize, String> = Default::default();
    let mut batch = Vec::with_capacity(CHUNK);
    for i in 0..n {
        // Power law: low author numbers write most.
        let author = ((authors as f64) * rng.unit().powi(3)) as usize;
        let followers = followers_of(authors_seed, author);
        let kind = rng.unit();
        let text = if kind < 0.45 {
            rng.pick(COMPLAINTS)
        } else if kind < 0.8 {
            rng.pick(QUESTIONS)
        } else {
            rng.pick(PRAISE)
        }
        .replace("{brand}", brand);
        let id = format!("seed-{}-{i}", ws.id.simple());
        let published = now - Duration::seconds((rng.unit() * 30.0 * 86_400.0) as i64);
        let mut e = json!({
            "id": id,
            "text": text,
            "visibility": if rng.unit() < 0.15 { "private" } else { "public" },
            "published_at": published.to_rfc3339(),
            "author": { "id": format!("author-{author}"), "handle": format!("customer_{author}"),
                        "name": format!("Customer {author}"), "followers": followers, "verified": followers > 50_000 },
        });
        if rng.unit() < 0.33
            && let Some(prev) = last_by_author.get(&author)
        {
            e["in_reply_to"] = json!(prev);
        }
        last_by_author.insert(author, id);
        batch.push(e);
        if batch.len() == CHUNK || i + 1 == n {
            import_chunk(db, ws, &ch, &batch, 0).await?;
            let so_far =
                done.fetch_add(batch.len(), std::sync::atomic::Ordering::Relaxed) + batch.len();
            batch.clear();
            progress(so_far, total, started);
        }
    }
    Ok(())
}

/// Answers a share of the workspace's conversations: an outbound reply
/// stored as sent, the first-response clock stopped.
async fn seed_replies(
    db: &sea_orm::DatabaseConnection,
    ws: &workspace::Model,
    percent: u8,
    rng: &mut Rng,
) -> anyhow::Result<usize> {
    let ids: Vec<Uuid> = conversation::Entity::find()
        .select_only()
        .column(conversation::Column::Id)
        .filter(conversation::Column::WorkspaceId.eq(ws.id))
        // Creation order (ids are time-ordered): the same seed answers the
        // same conversations.
        .order_by_asc(conversation::Column::Id)
        .into_tuple()
        .all(db)
        .await?;
    let slas = rapport_store::sla::load(db, ws.id).await?;
    let mut answered = 0;
    for chunk in ids.chunks(200) {
        let txn = begin_for_agency(db, ws.agency_id).await?;
        for id in chunk {
            if rng.unit() * 100.0 >= f64::from(percent) {
                continue;
            }
            let Some(c) = conversation::Entity::find_by_id(*id).one(&txn).await? else {
                continue;
            };
            let now = Utc::now();
            let mid = Uuid::now_v7();
            message::ActiveModel {
                id: Set(mid),
                agency_id: Set(c.agency_id),
                workspace_id: Set(c.workspace_id),
                conversation_id: Set(c.id),
                channel_id: Set(c.channel_id),
                author_id: Set(None),
                external_id: Set(format!("rapport:{mid}")),
                in_reply_to_external_id: Set(None),
                direction: Set("OUTBOUND".into()),
                visibility: Set(c.visibility.clone()),
                body: Set(format!(
                    "Thanks for reaching out, we are looking into it (ref {}).",
                    &mid.simple().to_string()[..8]
                )),
                masked_body: Set(None),
                sentiment: Set(None),
                published_at: Set(now),
                received_at: Set(now),
                template_id: Set(None),
                sent_by_membership_id: Set(None),
                delivery_status: Set(Some("SENT".into())),
                delivery_error: Set(None),
                delivery_unsure: Set(false),
                delivery_attempts: Set(1),
                next_delivery_at: Set(None),
                delivered_at: Set(Some(now)),
                platform_message_id: Set(None),
                intent: Set(Some("ACKNOWLEDGE".into())),
                created_at: Set(now),
            }
            .insert(&txn)
            .await?;
            let mut m = c.clone();
            let clock = rapport_store::sla::Snapshot::of(&m)
                .map_or(Clock::Calendar24x7, |s| slas.clock_of(&s));
            let met = rapport_store::sla::agent_replied(&mut m, &clock, now);
            let mut am = c.into_active_model();
            am.first_responded_at = Set(m.first_responded_at);
            am.first_response_business_s = Set(m.first_response_business_s);
            am.next_response_due_at = Set(m.next_response_due_at);
            am.due_at = Set(m.due_at);
            am.updated_at = Set(now);
            let saved = am.update(&txn).await?;
            // As a real reply does: the targets it met are SLA events, so
            // the demo's compliance report has them.
            rapport_store::sla::settle(&txn, &saved, met, now).await?;
            answered += 1;
        }
        txn.commit().await?;
    }
    Ok(answered)
}

#[cfg(test)]
mod tests {
    use super::{agency_seed, followers_of};

    #[test]
    fn follower_counts_are_the_authors_own_and_heavy_tailed() {
        let a = agency_seed(7, 0);
        assert_eq!(followers_of(a, 42), followers_of(a, 42));
        let counts: Vec<u64> = (0..10_000).map(|n| followers_of(a, n)).collect();
        assert!(counts.iter().all(|c| *c >= 10));
        // P(count > 1000) = 0.01^(1/1.2) ≈ 2.2 %; P(count < 100) ≈ 85 %.
        let loud = counts.iter().filter(|c| **c > 1000).count();
        let quiet = counts.iter().filter(|c| **c < 100).count();
        assert!((150..300).contains(&loud), "{loud}");
        assert!((8_000..9_000).contains(&quiet), "{quiet}");
        // Another agency's author #n, or another run's, is someone else.
        let first = |s: u64| (0..100).map(|n| followers_of(s, n)).collect::<Vec<_>>();
        assert_ne!(first(a), first(agency_seed(7, 1)));
        assert_ne!(first(a), first(agency_seed(8, 0)));
    }
}
