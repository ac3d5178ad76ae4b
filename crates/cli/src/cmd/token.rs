//! `pgwarden token`: a new random API token, for `api.token_file`.

use std::fs::File;
use std::io::Read;

use anyhow::{Context, Result};

/// 256 bits: nobody guesses it, whatever the rate of attempts.
const TOKEN_BYTES: usize = 32;

/// Prints a token on stdout (alone, so it can be redirected into the file)
/// and where it goes on stderr.
pub fn run() -> Result<()> {
    println!("{}", new_token()?);
    eprintln!(
        "put it alone in a file readable only by the user running pgwarden, the same on every member, e.g.\n  \
         pgwarden token > /etc/pgwarden/api.token; chmod 600 /etc/pgwarden/api.token\n\
         and set api.token_file = \"/etc/pgwarden/api.token\" in pgwarden.toml (docs/configuration.md)"
    );
    Ok(())
}

/// 32 bytes from the operating system's random generator, in hex.
fn new_token() -> Result<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read random bytes from /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::new_token;

    #[test]
    fn tokens_are_64_hex_digits_and_never_repeat() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }
}
