//! Token estimates, used to reserve before a call and to charge when the
//! upstream reports no usage: about four characters a token, rounded up. The
//! shapes of a request's prompt are walked in `service::request`.

pub fn tokens_of_text(s: &str) -> i64 {
    tokens_of_chars(s.chars().count())
}

/// Tokens of a text of `n` characters.
pub fn tokens_of_chars(n: usize) -> i64 {
    (n as i64 + 3) / 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates() {
        assert_eq!(tokens_of_text(""), 0);
        assert_eq!(tokens_of_text("abcd"), 1);
        assert_eq!(tokens_of_text("abcde"), 2);
        assert_eq!(tokens_of_text("é😀"), 1);
    }
}
