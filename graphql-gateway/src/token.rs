//! The `token` subcommand (`graphql-gateway token`, `library token`): prints a bearer token
//! signed with the shared HS256 key, for development and operations
//! (`export T=$(library token --sub ana)`). The token is the only thing written to stdout.
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// What the binary does instead of serving.
#[derive(clap::Subcommand, Clone, Debug)]
pub enum Command {
    /// Prints a bearer token signed with LIBRARY_JWT_SECRET (HS256), then exits.
    Token(TokenArgs),
}

/// The token to make.
#[derive(clap::Args, Clone, Debug)]
pub struct TokenArgs {
    /// The user id the token names (its `sub`).
    #[arg(long)]
    pub sub: String,
    /// Grants the administrator's operations (`roles: ["admin"]`).
    #[arg(long)]
    pub admin: bool,
    /// How long the token is valid: `3600s`, `30m`, `24h`, `7d` (a bare number is seconds).
    #[arg(long, default_value = "24h", value_parser = parse_ttl)]
    pub ttl: Duration,
}

impl TokenArgs {
    /// The roles the token carries.
    pub fn roles(&self) -> &'static [&'static str] {
        if self.admin { &["admin"] } else { &[] }
    }
}

/// Parses a lifetime: a whole number followed by `s`, `m`, `h` or `d` (or nothing: seconds).
///
/// # Errors
/// Not that form, zero, or more than ten years.
pub fn parse_ttl(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    let split = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let unit_seconds: u64 = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{value}` is not a lifetime like 3600s, 30m, 24h or 7d")),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{value}` is not a lifetime like 3600s, 30m, 24h or 7d"))?;
    let seconds = number
        .checked_mul(unit_seconds)
        .filter(|s| (1..=10 * 366 * 86_400).contains(s))
        .ok_or_else(|| format!("`{value}`: a lifetime is from 1 second to 10 years"))?;
    Ok(Duration::from_secs(seconds))
}

/// Writes the token (and a newline) to stdout and exits 0; or says why there is none on stderr
/// and exits 2, as a bad setting does.
pub fn print(token: anyhow::Result<String>) -> ExitCode {
    match token {
        Ok(token) => {
            let mut stdout = std::io::stdout().lock();
            match writeln!(stdout, "{token}").and_then(|()| stdout.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "error: cannot make a token: {error:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_take_a_unit() {
        assert_eq!(parse_ttl("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_ttl("3600s"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        for bad in [
            "",
            "h",
            "1.5h",
            "-1h",
            "0s",
            "24 hours",
            "1w",
            "99999999999999999999d",
            "4000d",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad} accepted");
        }
    }
}
