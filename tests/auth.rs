//! Sign-up, login, refresh rotation, logout, invitations, token forgery,
//! rate limits and typed errors, against a real server.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use serde_json::{Value, json};

const ME: &str = "{ me { role user { email } agency { name } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_login_and_me() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme Agency", "Owner@Acme.test").await;
    let me = app.ok(Some(&s.access), ME, json!({})).await;
    assert_eq!(me["me"]["role"], "OWNER");
    assert_eq!(me["me"]["user"]["email"], "owner@acme.test");
    assert_eq!(me["me"]["agency"]["name"], "Acme Agency");

    let login = app
        .ok(
            None,
            "mutation($i: LoginInput!) { login(input: $i) { accessToken role agency { id } } }",
            json!({ "i": { "email": "owner@acme.test", "password": PASSWORD } }),
        )
        .await;
    assert_eq!(login["login"]["role"], "OWNER");
    assert_eq!(login["login"]["agency"]["id"], s.agency_id.as_str());
    let token = login["login"]["accessToken"].as_str().unwrap();
    assert_eq!(app.ok(Some(token), ME, json!({})).await, me);

    let wrong = app
        .gql(
            None,
            "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
            json!({ "i": { "email": "owner@acme.test", "password": "not the password" } }),
        )
        .await;
    assert_eq!(code(&wrong), Some("UNAUTHENTICATED"));
    let unknown = app
        .gql(
            None,
            "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
            json!({ "i": { "email": "nobody@acme.test", "password": PASSWORD } }),
        )
        .await;
    assert_eq!(code(&unknown), Some("UNAUTHENTICATED"));
    assert_eq!(
        wrong["errors"][0]["message"], unknown["errors"][0]["message"],
        "unknown accounts and wrong passwords look the same"
    );

    let dup = app
        .gql(
            None,
            "mutation($i: SignUpInput!) { signUp(input: $i) { accessToken } }",
            json!({ "i": { "agencyName": "Other", "name": "X", "email": "OWNER@acme.test", "password": PASSWORD } }),
        )
        .await;
    assert_eq!(code(&dup), Some("BAD_USER_INPUT"));
    assert!(
        dup["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_rotate_are_single_use_and_replay_revokes() {
    // No grace: the token just spent ends the session at once.
    let app = TestApp::start_with(|s| s.refresh_reuse_grace = std::time::Duration::ZERO).await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let refresh = "mutation($t: String!) { refreshToken(token: $t) { accessToken refreshToken } }";

    let r1 = app.ok(None, refresh, json!({ "t": s.refresh })).await;
    let new_refresh = r1["refreshToken"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_string();
    let new_access = r1["refreshToken"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_refresh, s.refresh);
    app.ok(Some(&new_access), ME, json!({})).await;

    // The old token is spent; replaying it is treated as theft and ends
    // the session, so the newest tokens stop working too.
    let replay = app.gql(None, refresh, json!({ "t": s.refresh })).await;
    assert_eq!(code(&replay), Some("UNAUTHENTICATED"));
    let after = app.gql(None, refresh, json!({ "t": new_refresh })).await;
    assert_eq!(code(&after), Some("UNAUTHENTICATED"));
    let me = app.gql(Some(&new_access), ME, json!({})).await;
    assert_eq!(code(&me), Some("UNAUTHENTICATED"));

    let garbage = app.gql(None, refresh, json!({ "t": "nope" })).await;
    assert_eq!(code(&garbage), Some("UNAUTHENTICATED"));
}

/// The token spent last, back within seconds (two tabs refreshing at once,
/// a retry after a lost answer), is refused without ending the session;
/// after the grace it ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_refresh_token_back_within_the_grace_is_refused_without_ending_the_session() {
    let app =
        TestApp::start_with(|s| s.refresh_reuse_grace = std::time::Duration::from_secs(2)).await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let refresh = "mutation($t: String!) { refreshToken(token: $t) { accessToken refreshToken } }";
    let r1 = app.ok(None, refresh, json!({ "t": s.refresh })).await;
    let new_refresh = r1["refreshToken"]["refreshToken"].clone();
    let again = app.gql(None, refresh, json!({ "t": s.refresh })).await;
    assert_eq!(code(&again), Some("UNAUTHENTICATED"), "spent: {again}");
    let r2 = app.ok(None, refresh, json!({ "t": new_refresh })).await;
    // Past the grace, the token spent last is a thief's.
    tokio::time::sleep(std::time::Duration::from_millis(2_200)).await;
    let late = app.gql(None, refresh, json!({ "t": new_refresh })).await;
    assert_eq!(code(&late), Some("UNAUTHENTICATED"));
    let newest = app
        .gql(
            None,
            refresh,
            json!({ "t": r2["refreshToken"]["refreshToken"] }),
        )
        .await;
    assert_eq!(code(&newest), Some("UNAUTHENTICATED"), "the session ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_any_spent_refresh_token_ends_the_session_and_forgeries_do_not() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let refresh = "mutation($t: String!) { refreshToken(token: $t) { accessToken refreshToken } }";
    let next = |d: &serde_json::Value| {
        (
            d["refreshToken"]["accessToken"]
                .as_str()
                .unwrap()
                .to_string(),
            d["refreshToken"]["refreshToken"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    };
    let (_, t1) = next(&app.ok(None, refresh, json!({ "t": s.refresh })).await);
    let (_, t2) = next(&app.ok(None, refresh, json!({ "t": t1 })).await);

    // A token that only looks like one of this session's (its tag altered,
    // or another token's parts) is refused and ends nothing.
    let mut parts: Vec<&str> = t2.split('.').collect();
    assert_eq!(parts.len(), 3, "session, random part, tag: {t2}");
    let other = app.sign_up("Rival", "r@rival.test").await;
    parts[2] = other.refresh.split('.').nth(2).unwrap();
    let forged = parts.join(".");
    let r = app.gql(None, refresh, json!({ "t": forged })).await;
    assert_eq!(code(&r), Some("UNAUTHENTICATED"));
    let (access, t3) = next(&app.ok(None, refresh, json!({ "t": t2 })).await);
    app.ok(Some(&access), ME, json!({})).await;

    // The first token, spent two rotations ago, comes back: only a thief
    // holds it, so the session ends, its newest tokens with it.
    let r = app.gql(None, refresh, json!({ "t": s.refresh })).await;
    assert_eq!(code(&r), Some("UNAUTHENTICATED"));
    let r = app.gql(None, refresh, json!({ "t": t3 })).await;
    assert_eq!(code(&r), Some("UNAUTHENTICATED"));
    let me = app.gql(Some(&access), ME, json!({})).await;
    assert_eq!(code(&me), Some("UNAUTHENTICATED"));
    // The other agency's session is untouched.
    app.ok(Some(&other.access), ME, json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_access_and_refresh_tokens() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let out = app
        .ok(Some(&s.access), "mutation { logout }", json!({}))
        .await;
    assert_eq!(out["logout"], true);
    let me = app.gql(Some(&s.access), ME, json!({})).await;
    assert_eq!(code(&me), Some("UNAUTHENTICATED"));
    let r = app
        .gql(
            None,
            "mutation($t: String!) { refreshToken(token: $t) { accessToken } }",
            json!({ "t": s.refresh }),
        )
        .await;
    assert_eq!(code(&r), Some("UNAUTHENTICATED"));
}

fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn sign(claims: &serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_forged_and_unsigned_tokens_are_refused() {
    let app = TestApp::start().await;
    let s = app.sign_up("Acme", "a@acme.test").await;
    let claims = claims_of(&s.access);

    // Control: the same claims signed with the right key work.
    app.ok(Some(&sign(&claims, JWT_SECRET)), ME, json!({}))
        .await;

    let mut expired = claims.clone();
    let now = chrono::Utc::now().timestamp();
    expired["iat"] = json!(now - 7200);
    expired["exp"] = json!(now - 3600);
    let wrong_key = sign(&claims, "another-secret-0123456789abcdef0123");
    let header_none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let alg_none = format!("{header_none}.{body}.");
    let mut other_role = claims.clone();
    other_role["sid"] = json!(uuid::Uuid::now_v7());

    for (what, token) in [
        ("expired", sign(&expired, JWT_SECRET)),
        ("wrong key", wrong_key),
        ("alg none", alg_none),
        ("unknown session", sign(&other_role, JWT_SECRET)),
        ("garbage", "not.a.jwt".to_string()),
    ] {
        let r = app.gql(Some(&token), ME, json!({})).await;
        assert_eq!(code(&r), Some("UNAUTHENTICATED"), "{what}: {r}");
    }
    let anonymous = app.gql(None, ME, json!({})).await;
    assert_eq!(code(&anonymous), Some("UNAUTHENTICATED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_is_rate_limited_per_account_and_per_ip() {
    let app = TestApp::start_with(|s| {
        s.login_limit_per_account = 3;
        s.login_limit_per_ip = 6;
    })
    .await;
    app.sign_up("Acme", "a@acme.test").await;
    let login = "mutation($i: LoginInput!) { login(input: $i) { accessToken } }";
    for _ in 0..3 {
        let r = app
            .gql(
                None,
                login,
                json!({ "i": { "email": "a@acme.test", "password": "wrong password!" } }),
            )
            .await;
        assert_eq!(code(&r), Some("UNAUTHENTICATED"));
    }
    // The right password no longer helps once the account is limited.
    let r = app
        .gql(
            None,
            login,
            json!({ "i": { "email": "a@acme.test", "password": PASSWORD } }),
        )
        .await;
    assert_eq!(code(&r), Some("RATE_LIMITED"), "{r}");
    assert!(
        r["errors"][0]["extensions"]["retryAfterSeconds"]
            .as_u64()
            .unwrap()
            > 0
    );

    // Other accounts from the same IP: allowed until the IP limit (6).
    let mut codes = Vec::new();
    for i in 0..3 {
        let r = app
            .gql(None, login, json!({ "i": { "email": format!("x{i}@acme.test"), "password": "wrong password!" } }))
            .await;
        codes.push(code(&r).unwrap().to_string());
    }
    assert_eq!(
        codes,
        ["UNAUTHENTICATED", "UNAUTHENTICATED", "RATE_LIMITED"]
    );
}

/// A failed login of a made-up account from `forwarded_for`, sent straight
/// to the test server; its error code.
async fn wrong_login_from(app: &TestApp, i: usize, forwarded_for: &str) -> String {
    let r: Value = app
        .client
        .post(format!("{}/graphql", app.base))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({
            "query": "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
            "variables": { "i": { "email": format!("p{i}@acme.test"), "password": "wrong password!" } },
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    code(&r).unwrap().to_string()
}

/// Behind a trusted proxy the per-IP limit counts the address the proxy
/// saw; from anyone else `X-Forwarded-For` is ignored (a client could
/// otherwise name a new address for every try).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_ip_login_limit_believes_only_trusted_proxies() {
    let untrusted = TestApp::start_with(|s| s.login_limit_per_ip = 2).await;
    let mut codes = Vec::new();
    for i in 0..3 {
        codes.push(wrong_login_from(&untrusted, i, &format!("198.51.100.{i}")).await);
    }
    assert_eq!(
        codes,
        ["UNAUTHENTICATED", "UNAUTHENTICATED", "RATE_LIMITED"]
    );

    let proxied = TestApp::start_with(|s| {
        s.login_limit_per_ip = 2;
        s.trusted_proxies = vec![rapport_domain::client_ip::Cidr::parse("127.0.0.0/8").unwrap()];
    })
    .await;
    let mut codes = Vec::new();
    for i in 0..3 {
        // A client's own header first, the proxy's address for it last.
        codes.push(wrong_login_from(&proxied, i, "192.0.2.1, 198.51.100.7").await);
    }
    assert_eq!(
        codes,
        ["UNAUTHENTICATED", "UNAUTHENTICATED", "RATE_LIMITED"]
    );
    assert_eq!(
        wrong_login_from(&proxied, 3, "192.0.2.1, 198.51.100.8").await,
        "UNAUTHENTICATED",
        "another client behind the proxy has its own count"
    );
}

/// A login from `forwarded_for` (behind a trusted proxy); its error code,
/// or "OK".
async fn login_from(app: &TestApp, email: &str, password: &str, forwarded_for: &str) -> String {
    let r: Value = app
        .client
        .post(format!("{}/graphql", app.base))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({
            "query": "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
            "variables": { "i": { "email": email, "password": password } },
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    code(&r).map_or("OK".into(), str::to_string)
}

/// Wrong passwords from one client lock the account for that client only
/// (its owner elsewhere still signs in; an IPv6 client counts by its /64),
/// and the account as a whole stops at a higher ceiling, whatever the
/// address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guesser_locks_out_only_their_own_client() {
    let app = TestApp::start_with(|s| {
        s.login_limit_per_account = 3;
        s.login_limit_per_account_all = 5;
        s.login_limit_per_ip = 100;
        s.trusted_proxies = vec![rapport_domain::client_ip::Cidr::parse("127.0.0.0/8").unwrap()];
    })
    .await;
    app.sign_up("Acme", "a@acme.test").await;
    let email = "a@acme.test";
    let wrong = "wrong password!";
    for i in 1..=3 {
        // Three addresses of one IPv6 /64.
        let from = format!("2001:db8:1:2::{i}");
        assert_eq!(
            login_from(&app, email, wrong, &from).await,
            "UNAUTHENTICATED"
        );
    }
    assert_eq!(
        login_from(&app, email, PASSWORD, "2001:db8:1:2::99").await,
        "RATE_LIMITED",
        "the guesser's network is limited, the right password too"
    );
    assert_eq!(
        login_from(&app, email, PASSWORD, "198.51.100.7").await,
        "OK",
        "the owner elsewhere signs in"
    );
    // That started the account's windows over; spread guesses stop at
    // the ceiling (5), for every address.
    for from in [
        "203.0.113.1",
        "203.0.113.1",
        "203.0.113.2",
        "203.0.113.2",
        "203.0.113.3",
    ] {
        assert_eq!(
            login_from(&app, email, wrong, from).await,
            "UNAUTHENTICATED"
        );
    }
    assert_eq!(
        login_from(&app, email, PASSWORD, "198.51.100.7").await,
        "RATE_LIMITED"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_roles_and_removal() {
    let app = TestApp::start().await;
    let owner = app.sign_up("Acme", "owner@acme.test").await;
    let ws = app.create_workspace(&owner, "Brew Co").await;
    let (admin, admin_id) = app
        .add_member(&owner, "admin@acme.test", "ADMIN", None)
        .await;
    let (agent, agent_id) = app
        .add_member(&owner, "agent@acme.test", "AGENT", Some(vec![ws.clone()]))
        .await;
    let me = app.ok(Some(&agent.access), ME, json!({})).await;
    assert_eq!(me["me"]["role"], "AGENT");

    // An invitation works once.
    let d = app
        .ok(
            Some(&owner.access),
            "mutation($i: InviteMemberInput!) { inviteMember(input: $i) { invitationToken member { invitationPending } } }",
            json!({ "i": { "email": "v@client.test", "name": "Viewer", "role": "CLIENT_VIEWER", "workspaceIds": [ws] } }),
        )
        .await;
    assert_eq!(d["inviteMember"]["member"]["invitationPending"], true);
    let token = d["inviteMember"]["invitationToken"].as_str().unwrap();
    let accept =
        "mutation($i: AcceptInvitationInput!) { acceptInvitation(input: $i) { accessToken } }";
    app.ok(
        None,
        accept,
        json!({ "i": { "token": token, "password": PASSWORD } }),
    )
    .await;
    let again = app
        .gql(
            None,
            accept,
            json!({ "i": { "token": token, "password": PASSWORD } }),
        )
        .await;
    assert_eq!(code(&again), Some("UNAUTHENTICATED"));

    // Role rules: admins cannot grant OWNER or touch owners; agents manage nothing.
    let grant_owner = app
        .gql(
            Some(&admin.access),
            "mutation($i: UpdateMemberRoleInput!) { updateMemberRole(input: $i) { role } }",
            json!({ "i": { "memberId": agent_id, "role": "OWNER" } }),
        )
        .await;
    assert_eq!(code(&grant_owner), Some("FORBIDDEN"));
    let by_agent = app
        .gql(
            Some(&agent.access),
            "mutation($i: RemoveMemberInput!) { removeMember(input: $i) { removedMemberId } }",
            json!({ "i": { "memberId": admin_id } }),
        )
        .await;
    assert_eq!(code(&by_agent), Some("FORBIDDEN"));
    let viewer_unrestricted = app
        .gql(
            Some(&owner.access),
            "mutation($i: UpdateMemberRoleInput!) { updateMemberRole(input: $i) { role } }",
            json!({ "i": { "memberId": agent_id, "role": "CLIENT_VIEWER" } }),
        )
        .await;
    assert_eq!(code(&viewer_unrestricted), Some("BAD_USER_INPUT"));

    // The last owner cannot be demoted.
    let owner_member = app
        .ok(Some(&owner.access), "{ me { member { id } } }", json!({}))
        .await["me"]["member"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let demote = app
        .gql(
            Some(&owner.access),
            "mutation($i: UpdateMemberRoleInput!) { updateMemberRole(input: $i) { role } }",
            json!({ "i": { "memberId": owner_member, "role": "ADMIN" } }),
        )
        .await;
    assert_eq!(code(&demote), Some("BAD_USER_INPUT"));
    // Nor when the other OWNER is an invitation not yet accepted (it may
    // never be): the agency would be left with no one to run it.
    let invited = app
        .ok(
            Some(&owner.access),
            "mutation($i: InviteMemberInput!) { inviteMember(input: $i) { member { id invitationPending } } }",
            json!({ "i": { "email": "co-owner@a.test", "name": "Co", "role": "OWNER" } }),
        )
        .await;
    assert_eq!(invited["inviteMember"]["member"]["invitationPending"], true);
    for (what, q, i) in [
        (
            "demote",
            "mutation($i: UpdateMemberRoleInput!) { updateMemberRole(input: $i) { role } }",
            json!({ "memberId": owner_member, "role": "ADMIN" }),
        ),
        (
            "remove",
            "mutation($i: RemoveMemberInput!) { removeMember(input: $i) { removedMemberId } }",
            json!({ "memberId": owner_member }),
        ),
    ] {
        let r = app.gql(Some(&owner.access), q, json!({ "i": i })).await;
        assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{what}: {r}");
    }

    // Promotion takes effect on the next request, without a new token.
    let up = app
        .ok(
            Some(&owner.access),
            "mutation($i: UpdateMemberRoleInput!) { updateMemberRole(input: $i) { role restrictedToWorkspaces { id } } }",
            json!({ "i": { "memberId": agent_id, "role": "ADMIN" } }),
        )
        .await;
    assert_eq!(up["updateMemberRole"]["role"], "ADMIN");
    assert!(up["updateMemberRole"]["restrictedToWorkspaces"].is_null());
    let me = app.ok(Some(&agent.access), ME, json!({})).await;
    assert_eq!(me["me"]["role"], "ADMIN");

    // A removed member's tokens stop working at once.
    app.ok(
        Some(&owner.access),
        "mutation($i: RemoveMemberInput!) { removeMember(input: $i) { removedMemberId } }",
        json!({ "i": { "memberId": agent_id } }),
    )
    .await;
    let gone = app.gql(Some(&agent.access), ME, json!({})).await;
    assert_eq!(code(&gone), Some("UNAUTHENTICATED"));
    let refresh = app
        .gql(
            None,
            "mutation($t: String!) { refreshToken(token: $t) { accessToken } }",
            json!({ "t": agent.refresh }),
        )
        .await;
    assert_eq!(code(&refresh), Some("UNAUTHENTICATED"));

    // Every mutation is in the audit log.
    let log = app
        .ok(
            Some(&owner.access),
            "{ auditLog(first: 100) { edges { node { action actor { email } } } } }",
            json!({}),
        )
        .await;
    let actions: Vec<String> = edges(&log["auditLog"])
        .iter()
        .map(|e| e["node"]["action"].as_str().unwrap().to_string())
        .collect();
    for a in [
        "signUp",
        "createWorkspace",
        "inviteMember",
        "acceptInvitation",
        "updateMemberRole",
        "removeMember",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing from {actions:?}"
        );
    }
    let failed_attempts = actions.iter().filter(|a| *a == "updateMemberRole").count();
    assert_eq!(failed_attempts, 1, "refused mutations leave no audit entry");
    let denied = app
        .gql(
            Some(&admin.access),
            "{ auditLog { edges { node { action } } } }",
            json!({}),
        )
        .await;
    assert!(denied.get("errors").is_none(), "admins read the audit log");
}

/// Only wrong passwords count against an account: a person signing in
/// from several devices is not locked out by their own logins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_passwords_do_not_use_up_the_accounts_login_limit() {
    let app = TestApp::start_with(|s| {
        s.login_limit_per_account = 3;
        s.login_limit_per_ip = 100;
    })
    .await;
    app.sign_up("Acme", "a@acme.test").await;
    let login = "mutation($i: LoginInput!) { login(input: $i) { accessToken } }";
    let attempt = async |password: &str| {
        let r = app
            .gql(
                None,
                login,
                json!({ "i": { "email": "a@acme.test", "password": password } }),
            )
            .await;
        code(&r).unwrap_or("OK").to_string()
    };
    let mut codes = Vec::new();
    for password in [
        "wrong password!",
        "wrong password!",
        PASSWORD,
        PASSWORD,
        PASSWORD,
        "wrong password!",
        "wrong password!",
        PASSWORD,
    ] {
        codes.push(attempt(password).await);
    }
    assert_eq!(
        codes,
        [
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
            "OK",
            "OK",
            "OK",
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
            "OK"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_is_no_way_around_the_accounts_limit_on_password_guesses() {
    let app = TestApp::start_with(|s| {
        s.login_limit_per_account = 3;
        s.login_limit_per_ip = 100;
    })
    .await;
    app.sign_up("Acme", "victim@acme.test").await;
    // Anyone can sign up an agency and invite any e-mail: the invitation
    // token is the inviter's, and accepting it for an existing account
    // asks for that account's password.
    let attacker = app.sign_up("Evil", "evil@evil.test").await;
    let d = app
        .ok(
            Some(&attacker.access),
            "mutation($i: InviteMemberInput!) { inviteMember(input: $i) { invitationToken } }",
            json!({ "i": { "email": "victim@acme.test", "name": "V", "role": "AGENT" } }),
        )
        .await;
    let token = d["inviteMember"]["invitationToken"].as_str().unwrap();
    let accept =
        "mutation($i: AcceptInvitationInput!) { acceptInvitation(input: $i) { accessToken } }";
    let mut codes = Vec::new();
    for _ in 0..4 {
        let r = app
            .gql(
                None,
                accept,
                json!({ "i": { "token": token, "password": "a guessed password" } }),
            )
            .await;
        codes.push(code(&r).unwrap().to_string());
    }
    assert_eq!(
        codes,
        [
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
            "RATE_LIMITED"
        ]
    );
    // The account's own login is limited by the same count.
    let r = app
        .gql(
            None,
            "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
            json!({ "i": { "email": "victim@acme.test", "password": PASSWORD } }),
        )
        .await;
    assert_eq!(code(&r), Some("RATE_LIMITED"), "{r}");
}

/// An invitation token expires after 14 days, and inviting an address
/// tells nothing of whether it has an account (in another agency) while
/// the invitation is pending: neither that account's name nor its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_expire_and_reveal_no_other_agencys_name() {
    use rapport_store::entities::membership;
    use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel, Set};
    let app = TestApp::start().await;
    let acme = app.sign_up("Acme", "owner@acme.test").await;
    let rival = app.sign_up("Rival", "owner@rival.test").await;
    // Acme invites an address as an agent: the `inviteMember` payload.
    let invite = async |email: &str, name: &str| {
        app.ok(
            Some(&acme.access),
            "mutation($i: InviteMemberInput!) { inviteMember(input: $i) { invitationToken member { id user { id name email } } } }",
            json!({ "i": { "email": email, "name": name, "role": "AGENT" } }),
        )
        .await["inviteMember"]
            .clone()
    };
    // owner@rival.test signed up as "Owner" (the helper's name) in Rival.
    let existing = invite("owner@rival.test", "Somebody").await["member"].clone();
    let user = &existing["user"];
    assert_eq!(user["name"], "owner@rival.test", "{user}");
    assert_ne!(user["id"].as_str(), Some(rival.user_id.as_str()), "{user}");
    // A new address reads the same way: by its address, with an id that
    // dates the invitation, not an account.
    let d = invite("new@acme.test", "Nina New").await;
    let fresh = d["member"].clone();
    assert_eq!(fresh["user"]["name"], "new@acme.test", "{fresh}");
    for m in [&existing, &fresh] {
        let member = rapport_domain::GlobalId::decode(
            rapport_domain::Kind::Member,
            m["id"].as_str().unwrap(),
        )
        .unwrap();
        let user = rapport_domain::GlobalId::decode(
            rapport_domain::Kind::User,
            m["user"]["id"].as_str().unwrap(),
        )
        .unwrap();
        assert_eq!(
            user, member,
            "a pending member's user id is the invitation's: {m}"
        );
    }
    let listed = app
        .ok(
            Some(&acme.access),
            "{ members { edges { node { invitationPending user { name } } } } }",
            json!({}),
        )
        .await;
    let pending: Vec<_> = edges(&listed["members"])
        .iter()
        .filter(|e| e["node"]["invitationPending"] == true)
        .map(|e| e["node"]["user"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(pending.len(), 2, "{listed}");
    assert!(pending.iter().all(|n| n.contains('@')), "{listed}");
    // Once accepted, the member reads as the account: its name and id.
    let invited = invite("lea@acme.test", "Lea Later").await;
    let accepted = app
        .ok(
            None,
            "mutation($i: AcceptInvitationInput!) { acceptInvitation(input: $i) { user { id } } }",
            json!({ "i": { "token": invited["invitationToken"], "password": PASSWORD } }),
        )
        .await;
    let members = app
        .ok(
            Some(&acme.access),
            "{ members { edges { node { invitationPending user { id name } } } } }",
            json!({}),
        )
        .await;
    let lea = edges(&members["members"])
        .into_iter()
        .find(|e| e["node"]["user"]["name"] == "Lea Later")
        .unwrap_or_else(|| panic!("{members}"));
    assert_eq!(lea["node"]["invitationPending"], false);
    assert_eq!(
        lea["node"]["user"]["id"],
        accepted["acceptInvitation"]["user"]["id"]
    );
    let token = d["invitationToken"].as_str().unwrap().to_string();
    let member = rapport_domain::GlobalId::decode(
        rapport_domain::Kind::Member,
        d["member"]["id"].as_str().unwrap(),
    )
    .unwrap();
    // Fifteen days later the token no longer works.
    let m = membership::Entity::find_by_id(member)
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    let mut am = m.into_active_model();
    am.created_at = Set(chrono::Utc::now() - chrono::Duration::days(15));
    am.update(&app.state.db).await.unwrap();
    let r = app
        .gql(
            None,
            "mutation($i: AcceptInvitationInput!) { acceptInvitation(input: $i) { accessToken } }",
            json!({ "i": { "token": token, "password": PASSWORD } }),
        )
        .await;
    assert_eq!(code(&r), Some("UNAUTHENTICATED"), "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{r}"
    );
    let _ = rival;
}

/// A session left by a login that raced the member's removal (the removal
/// revoked the sessions it saw; this one was written after) must not come
/// back to life when the person is invited again, before or after they
/// accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_older_than_the_membership_does_not_authenticate() {
    use rapport_store::entities::session;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
    let app = TestApp::start().await;
    let owner = app.sign_up("Acme", "owner@acme.test").await;
    let (agent, agent_id) = app
        .add_member(&owner, "agent@acme.test", "AGENT", None)
        .await;
    app.ok(
        Some(&owner.access),
        "mutation($i: RemoveMemberInput!) { removeMember(input: $i) { removedMemberId } }",
        json!({ "i": { "memberId": agent_id } }),
    )
    .await;
    // The race's outcome: the agent's session unrevoked.
    let user =
        rapport_domain::GlobalId::decode(rapport_domain::Kind::User, &agent.user_id).unwrap();
    session::Entity::update_many()
        .col_expr(
            session::Column::RevokedAt,
            Expr::value(Option::<chrono::DateTime<chrono::Utc>>::None),
        )
        .filter(session::Column::UserId.eq(user))
        .exec(&app.state.db)
        .await
        .unwrap();
    let d = app
        .ok(
            Some(&owner.access),
            "mutation($i: InviteMemberInput!) { inviteMember(input: $i) { invitationToken } }",
            json!({ "i": { "email": "agent@acme.test", "name": "Agent", "role": "ADMIN" } }),
        )
        .await;
    let r = app.gql(Some(&agent.access), ME, json!({})).await;
    assert_eq!(code(&r), Some("UNAUTHENTICATED"), "pending: {r}");
    let refresh = app
        .gql(
            None,
            "mutation($t: String!) { refreshToken(token: $t) { accessToken } }",
            json!({ "t": agent.refresh }),
        )
        .await;
    assert_eq!(code(&refresh), Some("UNAUTHENTICATED"), "{refresh}");
    // Accepted: the new login works, the old session still does not.
    let token = d["inviteMember"]["invitationToken"].as_str().unwrap();
    let fresh = app
        .ok(
            None,
            "mutation($i: AcceptInvitationInput!) { acceptInvitation(input: $i) { accessToken } }",
            json!({ "i": { "token": token, "password": PASSWORD } }),
        )
        .await;
    let access = fresh["acceptInvitation"]["accessToken"].as_str().unwrap();
    let me = app.ok(Some(access), ME, json!({})).await;
    assert_eq!(me["me"]["role"], "ADMIN");
    let r = app.gql(Some(&agent.access), ME, json!({})).await;
    assert_eq!(code(&r), Some("UNAUTHENTICATED"), "accepted: {r}");
}

/// Anyone can invite any address and holds the token they invite with.
/// An account made by one agency's invitation has no password yet: a
/// second agency inviting the same address must not set it (and the name)
/// by accepting its own invitation. The earlier invitation sets it; the
/// later one then needs that password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_invitation_cannot_set_the_password_an_earlier_one_awaits() {
    let app = TestApp::start().await;
    let acme = app.sign_up("Acme", "owner@acme.test").await;
    let rival = app.sign_up("Rival", "owner@rival.test").await;
    const INVITE: &str =
        "mutation($i: InviteMemberInput!) { inviteMember(input: $i) { invitationToken } }";
    const ACCEPT: &str = "mutation($i: AcceptInvitationInput!) { acceptInvitation(input: $i) { accessToken user { name } } }";
    let invite = async |by: &Session, name: &str| {
        app.ok(
            Some(&by.access),
            INVITE,
            json!({ "i": { "email": "alice@example.test", "name": name, "role": "AGENT" } }),
        )
        .await["inviteMember"]["invitationToken"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let from_acme = invite(&acme, "Alice").await;
    let from_rival = invite(&rival, "IT desk").await;
    let r = app
        .gql(
            None,
            ACCEPT,
            json!({ "i": { "token": from_rival, "password": "chosen-by-rival-1", "name": "IT desk" } }),
        )
        .await;
    assert_eq!(code(&r), Some("FORBIDDEN"), "{r}");
    let d = app
        .ok(
            None,
            ACCEPT,
            json!({ "i": { "token": from_acme, "password": PASSWORD } }),
        )
        .await;
    assert_eq!(d["acceptInvitation"]["user"]["name"], "Alice");
    // Rival's invitation now asks for Alice's password.
    let r = app
        .gql(
            None,
            ACCEPT,
            json!({ "i": { "token": from_rival, "password": "chosen-by-rival-1" } }),
        )
        .await;
    assert_eq!(code(&r), Some("UNAUTHENTICATED"), "{r}");
    let d = app
        .ok(
            None,
            ACCEPT,
            json!({ "i": { "token": from_rival, "password": PASSWORD } }),
        )
        .await;
    assert_eq!(d["acceptInvitation"]["user"]["name"], "Alice");
}

/// A password change asks for the current one, ends the person's other
/// sessions (this one stays), and the old password stops working;
/// `logoutOtherSessions` ends the others alone; no session outlives 90
/// days from its sign-in, however often it is refreshed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_changes_and_sign_out_elsewhere_end_the_other_sessions() {
    use rapport_store::entities::session;
    use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel, QueryOrder, Set};
    let app = TestApp::start().await;
    let here = app.sign_up("Acme", "a@acme.test").await;
    let login = async |password: &str| {
        app.gql(
            None,
            "mutation($i: LoginInput!) { login(input: $i) { accessToken refreshToken } }",
            json!({ "i": { "email": "a@acme.test", "password": password } }),
        )
        .await
    };
    let phone = login(PASSWORD).await;
    let phone_access = phone["data"]["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let phone_refresh = phone["data"]["login"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_string();
    const CHANGE: &str = "mutation($i: ChangePasswordInput!) { changePassword(input: $i) }";
    const ME: &str = "{ me { user { email } } }";
    for (input, field) in [
        (
            json!({ "currentPassword": "not the password", "newPassword": "a brand new secret" }),
            "currentPassword",
        ),
        (
            json!({ "currentPassword": PASSWORD, "newPassword": "short" }),
            "newPassword",
        ),
    ] {
        let r = app
            .gql(Some(&here.access), CHANGE, json!({ "i": input }))
            .await;
        assert_eq!(code(&r), Some("BAD_USER_INPUT"), "{r}");
        assert_eq!(r["errors"][0]["extensions"]["field"], field);
    }
    let d = app
        .ok(
            Some(&here.access),
            CHANGE,
            json!({ "i": { "currentPassword": PASSWORD, "newPassword": "a brand new secret" } }),
        )
        .await;
    assert_eq!(d["changePassword"], true);
    app.ok(Some(&here.access), ME, json!({})).await;
    let r = app.gql(Some(&phone_access), ME, json!({})).await;
    assert_eq!(
        code(&r),
        Some("UNAUTHENTICATED"),
        "the other session ended: {r}"
    );
    let r = app
        .gql(
            None,
            "mutation($t: String!) { refreshToken(token: $t) { accessToken } }",
            json!({ "t": phone_refresh }),
        )
        .await;
    assert_eq!(code(&r), Some("UNAUTHENTICATED"), "{r}");
    assert_eq!(code(&login(PASSWORD).await), Some("UNAUTHENTICATED"));

    // Signed in twice more; one ends the other.
    let laptop = login("a brand new secret").await;
    let tablet = login("a brand new secret").await;
    let laptop_access = laptop["data"]["login"]["accessToken"].as_str().unwrap();
    let tablet_access = tablet["data"]["login"]["accessToken"].as_str().unwrap();
    let d = app
        .ok(
            Some(laptop_access),
            "mutation { logoutOtherSessions }",
            json!({}),
        )
        .await;
    assert_eq!(
        d["logoutOtherSessions"], 2,
        "the first session and the tablet"
    );
    app.ok(Some(laptop_access), ME, json!({})).await;
    assert_eq!(
        code(&app.gql(Some(tablet_access), ME, json!({})).await),
        Some("UNAUTHENTICATED")
    );
    assert_eq!(
        code(&app.gql(Some(&here.access), ME, json!({})).await),
        Some("UNAUTHENTICATED")
    );

    // The laptop's session began 91 days ago (the membership before it):
    // refreshing it no longer works.
    use rapport_store::entities::membership;
    for m in membership::Entity::find().all(&app.state.db).await.unwrap() {
        let mut am = m.into_active_model();
        am.created_at = Set(chrono::Utc::now() - chrono::Duration::days(100));
        am.update(&app.state.db).await.unwrap();
    }
    let newest = session::Entity::find()
        .order_by_desc(session::Column::CreatedAt)
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.revoked_at.is_none())
        .unwrap();
    let mut am = newest.into_active_model();
    am.created_at = Set(chrono::Utc::now() - chrono::Duration::days(91));
    am.update(&app.state.db).await.unwrap();
    let r = app
        .gql(
            None,
            "mutation($t: String!) { refreshToken(token: $t) { accessToken } }",
            json!({ "t": laptop["data"]["login"]["refreshToken"] }),
        )
        .await;
    assert_eq!(code(&r), Some("UNAUTHENTICATED"), "{r}");
}
