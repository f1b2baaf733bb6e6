//! The HTTP surface: health, readiness, metrics, GraphiQL, the schema
//! contract, request limits and typed errors for bad input.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_graphiql() {
    let app = TestApp::start().await;
    let get = |p: &str| app.client.get(format!("{}{p}", app.base)).send();
    let h = get("/healthz").await.unwrap();
    assert_eq!(h.status(), 200);
    let r = get("/readyz").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({ "database": "ok", "redis": "ok" })
    );
    app.gql(None, "{ __typename }", json!({})).await;
    let m = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(m.contains("rapport_graphql_requests_total"), "{m}");
    let g = get("/graphql").await.unwrap();
    assert_eq!(g.status(), 200);
    assert!(g.text().await.unwrap().contains("GraphiQL"));

    // A known path with a method it does not take: 405 naming those it
    // does, not a 404 that reads as a wrong URL.
    for (method, path, allow) in [
        (reqwest::Method::PUT, "/graphql", "GET, POST"),
        (reqwest::Method::DELETE, "/webhooks/anything", "GET, POST"),
        (reqwest::Method::POST, "/healthz", "GET, HEAD"),
        (
            reqwest::Method::PATCH,
            "/export/workspaces/x/report.csv",
            "GET",
        ),
    ] {
        let r = app
            .client
            .request(method.clone(), format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            body["errors"][0]["extensions"]["code"],
            "METHOD_NOT_ALLOWED"
        );
    }
    assert_eq!(get("/nowhere").await.unwrap().status(), 404);
    // Probes answer HEAD too, as uptime checkers send it.
    for path in ["/healthz", "/readyz"] {
        let r = app
            .client
            .head(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "HEAD {path}");
    }
}

#[test]
fn checked_in_schema_matches_the_code() {
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
            .expect("schema.graphql at the repository root");
    let generated = rapport_api::graphql::sdl();
    assert!(
        checked_in == generated,
        "schema.graphql is out of date: run `cargo run -- schema --write schema.graphql`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_bodies_get_clear_errors() {
    let app = TestApp::start_with(|s| s.max_body_bytes = 4096).await;
    let big = json!({ "query": format!("{{ __typename }} #{}", "x".repeat(5000)) });
    let r = app.post_raw(None, serde_json::to_vec(&big).unwrap()).await;
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "PAYLOAD_TOO_LARGE");

    let r = app.post_raw(None, b"{ not json".to_vec()).await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");

    let r = app.gql(None, "{ workspaces { ", json!({})).await;
    assert_eq!(
        code(&r),
        Some("BAD_USER_INPUT"),
        "syntax errors are typed: {r}"
    );

    // Not JSON by its Content-Type: 415; the media type's case does not
    // matter.
    let url = format!("{}/graphql", app.base);
    let with_type = async |content_type: &str| {
        app.client
            .post(&url)
            .header("content-type", content_type)
            .body(r#"{"query":"{ __typename }"}"#)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(with_type("text/plain").await, 415);
    assert_eq!(with_type("Application/JSON; charset=utf-8").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_and_complexity_are_limited() {
    let app = TestApp::start_with(|s| {
        s.max_query_depth = 3;
        s.max_query_complexity = 50;
    })
    .await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let deep = "{ me { member { restrictedToWorkspaces { id } user { id } } } }";
    let r = app.gql(Some(&s.access), deep, json!({})).await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("deep"),
        "{r}"
    );

    let wide = format!(
        "{{ {} }}",
        (0..30)
            .map(|i| format!("a{i}: me {{ role }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let r = app.gql(Some(&s.access), &wide, json!({})).await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("complex"),
        "{r}"
    );
}

/// Thirty fragments, each spreading the next eight times: 2 KB of text
/// that a walk spreading every fragment anew would take 8^29 steps over;
/// and a chain of fragments no operation uses.
/// Refused at once, without a login, and the server answers the next
/// request (the timeout only turns a hang into a failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_spread_within_fragments_are_refused_before_they_are_walked() {
    let app = TestApp::start().await;
    let mut q = String::from("query { ...F1 }");
    for i in 1..30 {
        q.push_str(&format!(
            " fragment F{i} on QueryRoot {{ {} }}",
            format!("...F{} ", i + 1).repeat(8)
        ));
    }
    q.push_str(" fragment F30 on QueryRoot { __typename }");
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        app.gql(None, &q, json!({})),
    )
    .await
    .expect("answered, not walked for ever");
    assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("expands to more than"),
        "{r}"
    );
    // Fragments no operation uses are walked by the validator all the
    // same: a chain of them is refused too, and the server lives on.
    let mut chain = String::from("query { __typename }");
    for i in 0..5_000 {
        chain.push_str(&format!(" fragment F{i} on QueryRoot {{ ...F{} }}", i + 1));
    }
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        app.gql(None, &chain, json!({})),
    )
    .await
    .expect("answered, not walked for ever");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("expands to more than"),
        "{r}"
    );
    // A query that spreads fragments within reason runs.
    let d = app
        .ok(
            None,
            "query { ...A } fragment A on QueryRoot { ...B ...B } fragment B on QueryRoot { __typename }",
            json!({}),
        )
        .await;
    assert_eq!(d["__typename"], "QueryRoot");
}

/// A body that trickles in (a byte now and then) is cut off at the
/// deadline with 408, on /graphql and on a webhook URL alike, rather than
/// holding its connection for as long as the client likes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_in_is_cut_off_at_the_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::start_with(|s| s.body_deadline = std::time::Duration::from_secs(1)).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let hook = app
        .ok(
            Some(&s.access),
            "mutation($i: ConnectChannelInput!) { connectChannel(input: $i) { webhookUrl } }",
            json!({ "i": { "workspaceId": ws, "kind": "GENERIC", "name": "g", "secret": "generic-secret" } }),
        )
        .await["connectChannel"]["webhookUrl"]
        .as_str()
        .unwrap()
        .to_string();
    let hook_path = format!("/webhooks/{}", hook.rsplit('/').next().unwrap());
    for path in ["/graphql".to_string(), hook_path] {
        let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
        sock.write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"q"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), sock.read(&mut answer))
            .await
            .expect("answered at the deadline")
            .unwrap();
        let head = String::from_utf8_lossy(&answer[..n]);
        assert!(head.starts_with("HTTP/1.1 408"), "{path}: {head}");
    }
}

/// The introspection query GraphiQL and graphql-js send (type references
/// nested nine `ofType` deep) fits the depth limit: without it GraphiQL
/// has no docs, no completion and no validation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiqls_introspection_query_fits_the_limits() {
    let app = TestApp::start().await;
    let mut type_ref = String::from("kind name");
    for _ in 0..9 {
        type_ref = format!("kind name ofType {{ {type_ref} }}");
    }
    let q = format!(
        "query IntrospectionQuery {{ __schema {{ queryType {{ name }} types {{ ...FullType }} }} }}
         fragment FullType on __Type {{ kind name description
           fields(includeDeprecated: true) {{ name description args {{ ...InputValue }} type {{ ...TypeRef }} isDeprecated deprecationReason }}
           inputFields {{ ...InputValue }} interfaces {{ ...TypeRef }} possibleTypes {{ ...TypeRef }} }}
         fragment InputValue on __InputValue {{ name description type {{ ...TypeRef }} defaultValue }}
         fragment TypeRef on __Type {{ {type_ref} }}"
    );
    let d = app.ok(None, &q, json!({})).await;
    assert!(d["__schema"]["types"].as_array().unwrap().len() > 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_typed_errors_and_change_nothing() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let sign_up = "mutation($i: SignUpInput!) { signUp(input: $i) { accessToken } }";
    for (field, input) in [
        (
            "email",
            json!({ "agencyName": "X", "name": "Y", "email": "not-an-email", "password": PASSWORD }),
        ),
        (
            "password",
            json!({ "agencyName": "X", "name": "Y", "email": "y@x.test", "password": "short" }),
        ),
        (
            "agencyName",
            json!({ "agencyName": "   ", "name": "Y", "email": "y@x.test", "password": PASSWORD }),
        ),
    ] {
        let r = app.gql(None, sign_up, json!({ "i": input })).await;
        assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{field}: {r}");
        assert_eq!(r["errors"][0]["extensions"]["field"], field);
    }
    let create = "mutation($i: CreateWorkspaceInput!) { createWorkspace(input: $i) { id } }";
    let r = app
        .gql(
            Some(&s.access),
            create,
            json!({ "i": { "name": "W", "timezone": "Mars/Olympus" } }),
        )
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"));
    assert_eq!(r["errors"][0]["extensions"]["field"], "timezone");
    let r = app
        .gql(
            Some(&s.access),
            create,
            json!({ "i": { "name": "W", "timezone": "UTC", "bannedPhrases": [" "] } }),
        )
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"));
    app.create_workspace(&s, "Same").await;
    let r = app
        .gql(
            Some(&s.access),
            create,
            json!({ "i": { "name": "Same", "timezone": "UTC" } }),
        )
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"), "duplicate name: {r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );
    let r = app
        .gql(Some(&s.access), create, json!({ "i": { "name": 5 } }))
        .await;
    assert_eq!(
        code(&r),
        Some("BAD_USER_INPUT"),
        "wrong variable types: {r}"
    );
    let r = app
        .gql(
            Some(&s.access),
            "{ workspaces(first: 101) { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"));
    assert_eq!(r["errors"][0]["extensions"]["field"], "first");
    let r = app
        .gql(
            Some(&s.access),
            "{ workspaces(after: \"bogus\") { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"));
    let r = app
        .gql(
            Some(&s.access),
            "query($id: ID!) { workspace(id: $id) { id } }",
            json!({ "id": "garbage" }),
        )
        .await;
    assert_eq!(code(&r), Some("NOT_FOUND"));

    let d = app
        .ok(
            Some(&s.access),
            "{ workspaces { edges { node { name } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        edges(&d["workspaces"]).len(),
        1,
        "only the one good workspace exists"
    );
    assert!(r["errors"][0]["message"].as_str().is_some());

    // Text PostgreSQL cannot store (U+0000), in variables or inline, is the
    // client's mistake on both backends, never an internal error.
    let ws = app.create_workspace(&s, "Brew Co").await;
    let r = app
        .gql(
            Some(&s.access),
            create,
            json!({ "i": { "name": "Nul\u{0}name", "timezone": "UTC" } }),
        )
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{r}");
    let r = app
        .gql(
            Some(&s.access),
            "query($w: ID!, $f: ConversationFilter) { conversations(workspaceId: $w, filter: $f) { edges { cursor } } }",
            json!({ "w": ws, "f": { "search": "cold\u{0}" } }),
        )
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{r}");
    let r = app
        .gql(
            Some(&s.access),
            "mutation { createWorkspace(input: { name: \"a\\u0000b\", timezone: \"UTC\" }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{r}");
    // Inside lists stored as JSON too (PostgreSQL refuses an escaped NUL).
    let r = app
        .gql(
            Some(&s.access),
            create,
            json!({ "i": { "name": "Keywords", "timezone": "UTC", "brandKeywords": ["brew\u{0}co"] } }),
        )
        .await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{r}");
    assert_eq!(r["errors"][0]["extensions"]["field"], "brandKeywords");
    // Webhook subscription URLs are parsed as URLs.
    let subscribe = "mutation($i: CreateWebhookSubscriptionInput!) { createWebhookSubscription(input: $i) { id } }";
    for url in [
        "https://",
        "https://exa mple.test/x",
        "https:///path",
        "ftp://x.test",
    ] {
        let r = app
            .gql(
                Some(&s.access),
                subscribe,
                json!({ "i": { "workspaceId": ws, "url": url, "events": ["SLA_BREACHED"], "secret": "hook-secret-123" } }),
            )
            .await;
        assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{url}: {r}");
        assert_eq!(r["errors"][0]["extensions"]["field"], "url", "{url}");
    }

    // Every list and text is bounded: a template's slots and their
    // guidance, the workspaces it is enabled in, a calendar's periods and
    // holidays.
    let template =
        "mutation($i: CreateReplyTemplateInput!) { createReplyTemplate(input: $i) { id } }";
    let slot = |n: usize, guidance: &str| json!({ "name": format!("s{n}"), "guidance": guidance });
    let body: String = (0..21).map(|n| format!("{{{{ slot.s{n} }}}} ")).collect();
    let calendar =
        "mutation($i: CreateBusinessCalendarInput!) { createBusinessCalendar(input: $i) { id } }";
    let monday = json!({ "day": "MONDAY", "opens": "09:00", "closes": "17:00" });
    for (field, mutation, input) in [
        (
            "slots",
            template,
            json!({ "workspaceId": ws, "name": "T", "intent": "ACKNOWLEDGE", "body": body,
                    "slots": (0..21).map(|n| slot(n, "g")).collect::<Vec<_>>() }),
        ),
        (
            "slots",
            template,
            json!({ "workspaceId": ws, "name": "T", "intent": "ACKNOWLEDGE", "body": "{{ slot.s0 }}",
                    "slots": [slot(0, &"g".repeat(1001))] }),
        ),
        (
            "enabledWorkspaceIds",
            template,
            json!({ "name": "T", "intent": "ACKNOWLEDGE", "body": "{{ slot.s0 }}", "slots": [slot(0, "g")],
                    "enabledWorkspaceIds": vec![ws.clone(); 1001] }),
        ),
        (
            "weeklyHours",
            calendar,
            json!({ "workspaceId": ws, "name": "C", "timezone": "UTC", "weeklyHours": vec![monday.clone(); 71] }),
        ),
        (
            "holidays",
            calendar,
            json!({ "workspaceId": ws, "name": "C", "timezone": "UTC", "weeklyHours": [monday],
                    "holidays": vec![json!({ "date": "2026-12-25" }); 1001] }),
        ),
    ] {
        let r = app
            .gql(Some(&s.access), mutation, json!({ "i": input }))
            .await;
        assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{field}: {r}");
        assert_eq!(r["errors"][0]["extensions"]["field"], field, "{r}");
        assert!(
            r["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("at most"),
            "{r}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_walks_every_workspace_once() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(app.create_workspace(&s, &format!("Brand {i}")).await);
    }
    let archived = created.remove(3);
    app.ok(
        Some(&s.access),
        "mutation($i: ArchiveWorkspaceInput!) { archiveWorkspace(input: $i) { archived } }",
        json!({ "i": { "id": archived } }),
    )
    .await;
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let d = app
            .ok(
                Some(&s.access),
                "query($after: String) { workspaces(first: 2, after: $after) {
                    edges { node { id } } pageInfo { hasNextPage endCursor } } }",
                json!({ "after": after }),
            )
            .await;
        for e in edges(&d["workspaces"]) {
            seen.push(e["node"]["id"].as_str().unwrap().to_string());
        }
        if !d["workspaces"]["pageInfo"]["hasNextPage"]
            .as_bool()
            .unwrap()
        {
            break;
        }
        after = d["workspaces"]["pageInfo"]["endCursor"]
            .as_str()
            .map(String::from);
    }
    assert_eq!(
        seen, created,
        "archived ones are hidden; order is creation order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_costs_its_size_in_complexity() {
    let app = TestApp::start_with(|s| s.max_query_complexity = 100).await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let q = "query($n: Int) { workspaces(first: $n) { edges { node { id name timezone } } } }";
    app.ok(Some(&s.access), q, json!({ "n": 10 })).await;
    let r = app.gql(Some(&s.access), q, json!({ "n": 100 })).await;
    assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{r}");
}

/// A plain list (templates, teams, policies, calendars, subscriptions)
/// reads up to hundreds of rows: it costs a page's worth, so aliases cannot
/// repeat it hundreds of times in one operation (and a field reading a row
/// per item costs more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_lists_cost_a_page_in_complexity() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let many = |n: usize, field: &str| -> String {
        let fields: String = (0..n).map(|i| format!(" a{i}: {field}")).collect();
        format!("{{{fields} }}")
    };
    for field in [
        format!("replyTemplates(workspaceId: \"{ws}\") {{ id workspace {{ id }} }}"),
        format!("slaPolicies(workspaceId: \"{ws}\") {{ id calendar {{ id }} }}"),
        format!("businessCalendars(workspaceId: \"{ws}\") {{ id }}"),
        format!("webhookSubscriptions(workspaceId: \"{ws}\") {{ id }}"),
        "teams { id members { id } }".to_string(),
        "agencyReplyTemplates { id }".to_string(),
    ] {
        let ok = app.gql(Some(&s.access), &many(2, &field), json!({})).await;
        assert!(ok["errors"].is_null(), "{field}: {ok}");
        let r = app
            .gql(Some(&s.access), &many(401, &field), json!({}))
            .await;
        assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{field}: {r}");
    }
}

/// A report, an overview or a text search reads far more than a field:
/// repeated under aliases, a handful fill the query's budget (before,
/// hundreds of reports fitted in one operation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_and_searches_cost_their_work_in_complexity() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let ws = app.create_workspace(&s, "Brew Co").await;
    let (f, t) = ("2026-11-01T00:00:00Z", "2026-11-08T00:00:00Z");
    let many = |n: usize, field: &str| -> String {
        let fields: String = (0..n).map(|i| format!(" a{i}: {field}")).collect();
        format!("{{{fields} }}")
    };
    let report = format!(
        "workspaceReport(workspaceId: \"{ws}\", from: \"{f}\", to: \"{t}\") {{ total {{ inbound }} }}"
    );
    let overview = format!("agencyOverview(from: \"{f}\", to: \"{t}\") {{ breaches }}");
    let search = format!(
        "conversations(workspaceId: \"{ws}\", first: 1, filter: {{ search: \"latte\" }}) {{ edges {{ cursor }} }}"
    );
    for field in [report, overview, search] {
        let ok = app.gql(Some(&s.access), &many(2, &field), json!({})).await;
        assert!(ok["errors"].is_null(), "{field}: {ok}");
        let r = app.gql(Some(&s.access), &many(10, &field), json!({})).await;
        assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{field}: {r}");
        assert!(
            r["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("complex"),
            "{r}"
        );
    }
    let long = app
        .gql(
            Some(&s.access),
            "{ agencyOverview(from: \"2024-01-01T00:00:00Z\", to: \"2026-01-01T00:00:00Z\") { breaches } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&long), Some("BAD_USER_INPUT"), "{long}");
    // Other fields are as cheap as before.
    let r = app
        .gql(
            Some(&s.access),
            &many(100, "workspaces(first: 1) { edges { cursor } }"),
            json!({}),
        )
        .await;
    assert!(r["errors"].is_null(), "{r}");
}
