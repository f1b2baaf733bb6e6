//! The API's one error type, mapped once to the wire: a GraphQL error with a
//! typed `extensions.code`. Internal details are logged, never sent.

use async_graphql::ErrorExtensions;
use rapport_domain::ParseError;
use rapport_store::StoreError;
/// Deliberately not `Display`: async-graphql converts any `Display` error
/// into a code-less message, and this type must always carry its code.
#[derive(Debug, Clone)]
pub enum ApiError {
    Unauthenticated(&'static str),
    Forbidden(&'static str),
    NotFound,
    BadInput {
        field: Option<&'static str>,
        message: String,
    },
    RateLimited {
        retry_after_secs: u64,
    },
    /// The canned-reply guard refused a reply: (code, message) findings.
    Canned(Vec<(&'static str, String)>),
    /// A service the operation needs went away (a live feed's Redis): try
    /// again.
    Unavailable(&'static str),
    /// Logged with its detail; the client sees only "internal error".
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn bad_input(field: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadInput {
            field: Some(field),
            message: format!("{field}: {}", message.into()),
        }
    }

    /// BAD_USER_INPUT unless `count` (entries or characters, as `what`
    /// says) is at most `max`: every list and text a client sends is
    /// bounded, so no request can make the server store or loop without end.
    pub fn at_most(field: &'static str, count: usize, max: usize, what: &str) -> ApiResult<()> {
        if count > max {
            return Err(Self::bad_input(field, format!("at most {max} {what}")));
        }
        Ok(())
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        ApiError::Internal(err.to_string())
    }

    /// The message clients see.
    pub fn message(&self) -> String {
        match self {
            ApiError::Unauthenticated(m) | ApiError::Forbidden(m) | ApiError::Unavailable(m) => {
                m.to_string()
            }
            ApiError::NotFound => "not found".into(),
            ApiError::BadInput { message, .. } => message.clone(),
            ApiError::RateLimited { retry_after_secs } => {
                format!("too many attempts; retry in {retry_after_secs} seconds")
            }
            ApiError::Canned(f) => format!(
                "this reply looks canned: {}",
                f.first().map_or("", |x| x.1.as_str())
            ),
            ApiError::Internal(_) => "internal error".into(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated(_) => "UNAUTHENTICATED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::NotFound => "NOT_FOUND",
            ApiError::BadInput { .. } => "BAD_USER_INPUT",
            ApiError::RateLimited { .. } => "RATE_LIMITED",
            ApiError::Canned(_) => "CANNED_REPLY",
            ApiError::Unavailable(_) => "UNAVAILABLE",
            ApiError::Internal(_) => "INTERNAL",
        }
    }
}

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        ApiError::bad_input(e.field, e.reason)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound,
            StoreError::Conflict(msg) => ApiError::BadInput {
                field: None,
                message: msg.to_string(),
            },
            StoreError::Db(db) => ApiError::Internal(db.to_string()),
        }
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> Self {
        StoreError::from(e).into()
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        ApiError::Internal(format!("redis: {e}"))
    }
}

impl ErrorExtensions for ApiError {
    fn extend(&self) -> async_graphql::Error {
        if let ApiError::Internal(detail) = self {
            tracing::error!(%detail, "internal error while resolving a GraphQL field");
        }
        async_graphql::Error::new(self.message()).extend_with(|_, ext| {
            ext.set("code", self.code());
            match self {
                ApiError::BadInput {
                    field: Some(field), ..
                } => ext.set("field", *field),
                ApiError::RateLimited { retry_after_secs } => {
                    ext.set("retryAfterSeconds", *retry_after_secs)
                }
                ApiError::Canned(findings) => {
                    let list: Vec<async_graphql::Value> = findings
                        .iter()
                        .map(|(code, message)| {
                            let mut m = async_graphql::indexmap::IndexMap::new();
                            m.insert(
                                async_graphql::Name::new("code"),
                                async_graphql::Value::from(*code),
                            );
                            m.insert(
                                async_graphql::Name::new("message"),
                                async_graphql::Value::from(message.as_str()),
                            );
                            async_graphql::Value::Object(m)
                        })
                        .collect();
                    ext.set("findings", async_graphql::Value::List(list))
                }
                _ => {}
            }
        })
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(e: ApiError) -> Self {
        e.extend()
    }
}
