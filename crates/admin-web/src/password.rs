//! The one password policy for new passwords, whoever sets them: the bootstrap form, the user
//! pages, the API and the `pophost` CLI all call `password_problem`, so a rule (and the sentence
//! that explains it) changes in one place.

/// Whose password it is. An admin account reaches many mailboxes (a super admin all of them), so
/// it needs a longer password than one mailbox does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordFor {
    Admin,
    Mailbox,
}

impl PasswordFor {
    /// The fewest characters (not bytes) a new password may have.
    pub const fn min_chars(self) -> usize {
        match self {
            PasswordFor::Admin => 12,
            PasswordFor::Mailbox => 8,
        }
    }
}

/// Past this a password is surely a paste accident, and argon2 would still hash all of it.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// Why a new password is refused. The text is shown as is by the UI, the API and the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordProblem {
    /// Fewer characters than the account's minimum.
    #[error("use a password of at least {0} characters")]
    TooShort(usize),
    /// More than `MAX_PASSWORD_CHARS`.
    #[error("use a password of at most {0} characters")]
    TooLong(usize),
}

/// Whether `password` may become the password of a `kind` account.
pub fn password_problem(password: &str, kind: PasswordFor) -> Result<(), PasswordProblem> {
    let n = password.chars().count();
    if n < kind.min_chars() {
        Err(PasswordProblem::TooShort(kind.min_chars()))
    } else if n > MAX_PASSWORD_CHARS {
        Err(PasswordProblem::TooLong(MAX_PASSWORD_CHARS))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_counted_in_characters() {
        let admin = PasswordFor::Admin;
        assert_eq!(
            password_problem("x", admin),
            Err(PasswordProblem::TooShort(12))
        );
        assert!(password_problem(&"é".repeat(11), admin).is_err());
        assert_eq!(password_problem(&"é".repeat(12), admin), Ok(()));
        assert_eq!(password_problem("eight ch", PasswordFor::Mailbox), Ok(()));
        assert_eq!(
            password_problem(&"x".repeat(1025), PasswordFor::Mailbox),
            Err(PasswordProblem::TooLong(1024))
        );
    }
}
