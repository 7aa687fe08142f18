//! GraphQL scenarios against the gateway: the catalogue listing, borrowing with the dashboard's
//! lag, and the seed's HPA load (`siege -c20 -t40S` on the borrow listing).
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;
use serde_json::{Value, json};

use crate::driver::{Failure, LoadArgs, Slot, drive, run_tag};
use crate::probe::{Poll, ProbeArgs, Probes};
use crate::report::Report;

const DEFAULT_URL: &str = "http://127.0.0.1:8080/graphql";
/// Copies of the book a run creates: more than a run can borrow.
const COPIES: i32 = 100_000;
/// Borrows one synthetic reader makes in `hpa` before the next takes over (the contract's
/// default limit is 10 outstanding copies).
const BORROWS_PER_READER: u64 = 5;

const BOOKS: &str =
    "query Books($first: Int!) { books(first: $first) { totalCount nodes { id title availableCopies } } }";
const CREATE_BOOK: &str = "mutation CreateBook($input: CreateBookInput!) { createBook(input: $input) { id } }";
const BORROW: &str = "mutation Borrow($bookId: ID!) { borrowBook(bookId: $bookId, quantity: 1) { id status } }";
const MY_LOANS: &str = "query MyLoans { myLoans(first: 20) { totalCount nodes { id status } } }";
const MY_DASHBOARD: &str = "query Dashboard { myDashboard { borrowedCount updatedAt } }";

/// `graphql-books`: the settings.
#[derive(clap::Args, Clone, Debug)]
pub struct BooksArgs {
    /// The gateway's GraphQL endpoint.
    #[arg(long, default_value = DEFAULT_URL)]
    pub url: String,
    /// Books per page.
    #[arg(long, default_value_t = 20)]
    pub first: u32,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// `graphql-borrow`: the settings.
#[derive(clap::Args, Clone, Debug)]
pub struct BorrowArgs {
    #[command(flatten)]
    pub gateway: SignedGateway,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub probes: ProbeArgs,
}

/// `hpa`: the settings.
#[derive(clap::Args, Clone, Debug)]
pub struct HpaArgs {
    #[command(flatten)]
    pub gateway: SignedGateway,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// The gateway of the scenarios that act as signed-in users.
#[derive(clap::Args, Clone, Debug)]
pub struct SignedGateway {
    /// The gateway's GraphQL endpoint.
    #[arg(long, default_value = DEFAULT_URL)]
    pub url: String,
    /// The gateway's HS256 key, to sign the admin's and the readers' tokens.
    #[arg(long, env = "LIBRARY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
}

impl SignedGateway {
    /// A client, the token issuer, and the book the scenario borrows (created as admin).
    async fn prepare(&self, load: &LoadArgs, scenario: &str) -> anyhow::Result<(Client, Arc<Tokens>, Arc<str>)> {
        let client = Client::new(&self.url, load)?;
        let tokens = Arc::new(Tokens::new(&self.jwt_secret));
        let book_id = create_book(&client, &tokens, scenario).await?.into();
        Ok((client, tokens, book_id))
    }
}

/// `POST { books(first: 20) { … } }` from every task, without a token.
pub async fn books(args: &BooksArgs) -> anyhow::Result<Report> {
    let client = Client::new(&args.url, &args.load)?;
    let variables = json!({ "first": args.first });
    // A gateway that is not there fails the run at once instead of filling it with refusals.
    if let Err(Failure(kind)) = client.execute(BOOKS, variables.clone(), None).await
        && (kind == "connect" || kind == "timeout")
    {
        bail!("cannot reach {}: {kind}", args.url);
    }
    let run = drive(&args.load, move |_| {
        let (client, variables) = (client.clone(), variables.clone());
        async move { client.execute(BOOKS, variables, None).await.map(drop) }
    })
    .await?;
    Ok(run.report("graphql-books", &args.url, &args.load))
}

/// Creates a book as admin, then each request borrows one copy as a new reader; for a sample,
/// polls that reader's dashboard until it counts the copy.
pub async fn borrow(args: &BorrowArgs) -> anyhow::Result<Report> {
    let (client, tokens, book_id) = args.gateway.prepare(&args.load, "graphql-borrow").await?;
    let probes = Probes::new(args.probes.clone());
    let (tag, sampler) = (run_tag(), probes.clone());
    let run = drive(&args.load, move |slot| {
        let (client, tokens, book_id) = (client.clone(), tokens.clone(), book_id.clone());
        let probes = sampler.clone();
        let reader = format!("load-{tag}-{}-{}", slot.task, slot.n);
        async move {
            let token = tokens.reader(&reader)?;
            borrow_book(&client, &token, &book_id).await?;
            let (replied, replied_at) = (Instant::now(), SystemTime::now());
            if !slot.warm_up && probes.sample() {
                probes.spawn(replied, move || {
                    dashboard_counts(client.clone(), token.clone(), 1, replied_at)
                });
            }
            Ok(())
        }
    })
    .await?;
    let mut report = run.report("graphql-borrow", &args.gateway.url, &args.load);
    report
        .lags
        .push(probes.finish("reply -> dashboard borrowedCount").await);
    Ok(report)
}

/// The seed's `siege -c20 -t40S` on the borrow listing: each virtual user alternates
/// `borrowBook` and `myLoans`, switching to a new reader every few borrows.
pub async fn hpa(args: &HpaArgs) -> anyhow::Result<Report> {
    let (client, tokens, book_id) = args.gateway.prepare(&args.load, "hpa").await?;
    let tag = run_tag();
    let run = drive(&args.load, move |slot: Slot| {
        let (client, tokens, book_id) = (client.clone(), tokens.clone(), book_id.clone());
        let reader = format!("load-{tag}-{}-{}", slot.task, slot.n / (2 * BORROWS_PER_READER));
        async move {
            let token = tokens.reader(&reader)?;
            if slot.n.is_multiple_of(2) {
                borrow_book(&client, &token, &book_id)
                    .await
                    .map_err(|f| Failure(format!("borrowBook: {}", f.0)))
            } else {
                client
                    .execute(MY_LOANS, json!({}), Some(&token))
                    .await
                    .map(drop)
                    .map_err(|f| Failure(format!("myLoans: {}", f.0)))
            }
        }
    })
    .await?;
    Ok(run.report("hpa", &args.gateway.url, &args.load))
}

async fn borrow_book(client: &Client, token: &str, book_id: &str) -> Result<(), Failure> {
    let data = client
        .execute(BORROW, json!({ "bookId": book_id }), Some(token))
        .await?;
    match data.pointer("/borrowBook/id").and_then(Value::as_str) {
        Some(_) => Ok(()),
        None => Err(Failure::new("bad_response")),
    }
}

/// One poll of the reader's dashboard: has it counted `expected` copies yet?
async fn dashboard_counts(client: Client, token: String, expected: i64, replied_at: SystemTime) -> Poll {
    match client.execute(MY_DASHBOARD, json!({}), Some(&token)).await {
        Ok(data) => dashboard_poll(&data, expected, replied_at),
        Err(Failure(kind)) => Poll::Failed(kind),
    }
}

/// Whether `myDashboard` counts `expected` copies; if so, how long after the reply: its
/// `updatedAt` is when the change was applied (each probed reader borrows once, so the last
/// change is this borrow's).
fn dashboard_poll(data: &Value, expected: i64, replied_at: SystemTime) -> Poll {
    match data.pointer("/myDashboard/borrowedCount").and_then(Value::as_i64) {
        Some(count) if count >= expected => {
            let updated_at = data
                .pointer("/myDashboard/updatedAt")
                .and_then(Value::as_str)
                .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                .map(SystemTime::from);
            Poll::reached_at(updated_at, replied_at)
        }
        Some(_) => Poll::Pending,
        None => Poll::Failed("bad_response".into()),
    }
}

async fn create_book(client: &Client, tokens: &Tokens, scenario: &str) -> anyhow::Result<String> {
    let admin = tokens.admin()?;
    let input = json!({
        "input": {
            "title": format!("library-load {scenario} {}", run_tag()),
            "author": "library-load",
            "totalCopies": COPIES,
        }
    });
    let data = client
        .execute(CREATE_BOOK, input, Some(&admin))
        .await
        .map_err(|Failure(kind)| anyhow!("createBook on {} failed: {kind}", client.url))?;
    data.pointer("/createBook/id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("createBook on {} answered without an id", client.url))
}

/// A keep-alive GraphQL-over-HTTP client.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    url: Arc<str>,
}

impl Client {
    fn new(url: &str, load: &LoadArgs) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(load.concurrency)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(3))
            .timeout(load.request_timeout)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self { http, url: url.into() })
    }

    /// Runs one operation and returns its `data`. A reply with a top-level `errors` array fails
    /// with the first error's `extensions.code`.
    async fn execute(&self, query: &str, variables: Value, token: Option<&str>) -> Result<Value, Failure> {
        let mut request = self
            .http
            .post(&*self.url)
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(transport_failure)?;
        let status = response.status();
        let body: Value = match response.json().await {
            Ok(body) => body,
            Err(_) if !status.is_success() => return Err(http_failure(status)),
            Err(error) => return Err(transport_failure(error)),
        };
        graphql_outcome(body).and_then(|data| {
            if status.is_success() {
                Ok(data)
            } else {
                Err(http_failure(status))
            }
        })
    }
}

/// The `data` of a GraphQL reply, or the failure it reports.
fn graphql_outcome(mut body: Value) -> Result<Value, Failure> {
    if let Some(first) = body
        .get("errors")
        .and_then(Value::as_array)
        .and_then(|errors| errors.first())
    {
        let code = first
            .pointer("/extensions/code")
            .and_then(Value::as_str)
            .unwrap_or("NO_CODE");
        return Err(Failure::new(code));
    }
    match body.get_mut("data").map(Value::take) {
        Some(data) if !data.is_null() => Ok(data),
        _ => Err(Failure::new("bad_response")),
    }
}

fn http_failure(status: reqwest::StatusCode) -> Failure {
    Failure(format!("http_{}", status.as_u16()))
}

fn transport_failure(error: reqwest::Error) -> Failure {
    Failure::new(if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_decode() || error.is_body() {
        "bad_response"
    } else {
        "transport"
    })
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: i64,
    roles: &'a [&'a str],
}

/// Signs the bearer tokens the gateway accepts (HS256, `sub`, `exp`, `roles`).
struct Tokens {
    key: EncodingKey,
}

impl Tokens {
    fn new(secret: &str) -> Self {
        Self {
            key: EncodingKey::from_secret(secret.as_bytes()),
        }
    }

    fn sign(&self, sub: &str, roles: &[&str]) -> Result<String, jsonwebtoken::errors::Error> {
        let exp = (chrono::Utc::now() + chrono::Duration::hours(1)).timestamp();
        jsonwebtoken::encode(&Header::default(), &Claims { sub, exp, roles }, &self.key)
    }

    fn admin(&self) -> anyhow::Result<String> {
        self.sign("library-load-admin", &["admin"])
            .context("cannot sign the admin token")
    }

    fn reader(&self, sub: &str) -> Result<String, Failure> {
        self.sign(sub, &[]).map_err(|_| Failure::new("jwt"))
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, Validation};

    use super::*;

    #[test]
    fn errors_are_counted_by_their_code() {
        let busy = json!({
            "data": null,
            "errors": [{ "message": "busy", "extensions": { "code": "SERVICE_BUSY", "retryAfterSeconds": 1 } }]
        });
        assert_eq!(graphql_outcome(busy).unwrap_err().0, "SERVICE_BUSY");
        let bare = json!({ "errors": [{ "message": "x" }] });
        assert_eq!(graphql_outcome(bare).unwrap_err().0, "NO_CODE");
        let ok = json!({ "data": { "books": { "totalCount": 0 } } });
        assert_eq!(graphql_outcome(ok).unwrap()["books"]["totalCount"], 0);
    }

    #[test]
    fn tokens_carry_the_contract_claims() {
        let tokens = Tokens::new("s3cret");
        let token = tokens.admin().expect("signs");
        let decoded =
            jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_secret(b"s3cret"), &Validation::default())
                .expect("valid HS256 token");
        assert_eq!(decoded.claims["roles"], json!(["admin"]));
        assert!(decoded.claims["exp"].as_i64().unwrap() > chrono::Utc::now().timestamp());
        let reader = tokens.reader("load-1").expect("signs");
        let decoded =
            jsonwebtoken::decode::<Value>(&reader, &DecodingKey::from_secret(b"s3cret"), &Validation::default())
                .expect("valid HS256 token");
        assert_eq!(decoded.claims["sub"], "load-1");
        assert_eq!(decoded.claims["roles"], json!([]));
    }

    #[test]
    fn the_lag_to_the_dashboard_is_read_from_its_update_time() {
        let replied_at = SystemTime::now();
        let at = |lag_ms: i64| {
            let time = chrono::DateTime::<chrono::Utc>::from(replied_at) + chrono::Duration::milliseconds(lag_ms);
            json!({ "myDashboard": { "borrowedCount": 1, "updatedAt": time.to_rfc3339() } })
        };
        assert!(matches!(
            dashboard_poll(&at(42), 1, replied_at),
            Poll::ReachedAfter(lag) if lag == Duration::from_millis(42)
        ));
        assert!(matches!(dashboard_poll(&at(-3), 1, replied_at), Poll::ReachedAfter(lag) if lag.is_zero()));
        let untimed = json!({ "myDashboard": { "borrowedCount": 1, "updatedAt": null } });
        assert!(matches!(dashboard_poll(&untimed, 1, replied_at), Poll::Reached));
        let before = json!({ "myDashboard": { "borrowedCount": 0, "updatedAt": null } });
        assert!(matches!(dashboard_poll(&before, 1, replied_at), Poll::Pending));
        assert!(matches!(dashboard_poll(&json!({}), 1, replied_at), Poll::Failed(_)));
    }
}
