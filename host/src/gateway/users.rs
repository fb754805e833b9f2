//! Who may connect: the manifest's `[broker.users]` with argon2 password
//! hashes, and whether anonymous clients are let in.

use super::acl::Permissions;
use crate::manifest::BrokerUser;
use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use rumqttd::protocol::Login;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Why a CONNECT was refused; maps to the CONNACK code the client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown user or wrong password.
    BadCredentials,
    /// No username, and anonymous access is off.
    NotAuthorized,
}

pub struct Users {
    users: BTreeMap<String, BrokerUser>,
    anonymous: bool,
    /// SHA-256 of the password each user last logged in with. argon2 is
    /// slow on purpose (tens of ms); a device that reconnects every few
    /// seconds must not cost that each time, and a fast hash of a password
    /// already proven right is only ever compared, never stored on disk.
    proven: Mutex<HashMap<String, [u8; 32]>>,
}

impl Users {
    pub fn new(users: BTreeMap<String, BrokerUser>, anonymous: bool) -> Arc<Self> {
        Arc::new(Self {
            users,
            anonymous,
            proven: Mutex::default(),
        })
    }

    /// Whether any client at all can get in.
    pub fn admit_anyone(&self) -> bool {
        self.anonymous || !self.users.is_empty()
    }

    /// The connection's permissions, or why it is refused.
    pub async fn authenticate(
        self: &Arc<Self>,
        login: Option<&Login>,
        client_id: &str,
    ) -> Result<Permissions, Refusal> {
        let Some(login) = login.filter(|l| !l.username.is_empty()) else {
            return if self.anonymous {
                Ok(Permissions::all())
            } else {
                Err(Refusal::NotAuthorized)
            };
        };
        let user = self
            .users
            .get(&login.username)
            .ok_or(Refusal::BadCredentials)?;
        let digest: [u8; 32] = Sha256::digest(login.password.as_bytes()).into();
        let proven = self.proven.lock().expect("users lock").get(&login.username) == Some(&digest);
        if !proven {
            let hash = user.password_hash.clone();
            let password = login.password.clone();
            let verified = tokio::task::spawn_blocking(move || verify(&hash, &password))
                .await
                .unwrap_or(false);
            if !verified {
                return Err(Refusal::BadCredentials);
            }
            self.proven
                .lock()
                .expect("users lock")
                .insert(login.username.clone(), digest);
        }
        Ok(Permissions::of(user, &login.username, client_id))
    }
}

fn verify(hash: &str, password: &str) -> bool {
    // The manifest's hashes were parsed when it was validated.
    PasswordHash::new(hash).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// An argon2id PHC string for `password`, with a random salt.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any password")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(username: &str, password: &str) -> Login {
        Login {
            username: username.into(),
            password: password.into(),
        }
    }

    #[tokio::test]
    async fn checks_passwords_against_their_hash() {
        let user = BrokerUser {
            password_hash: hash_password("s3cret"),
            publish: vec![],
            subscribe: vec!["#".into()],
        };
        let users = Users::new(BTreeMap::from([("scada".to_string(), user)]), false);
        for _ in 0..2 {
            // The second round takes the proven-password path.
            assert!(
                users
                    .authenticate(Some(&login("scada", "s3cret")), "c")
                    .await
                    .is_ok()
            );
        }
        for (who, password) in [("scada", "wrong"), ("nobody", "s3cret")] {
            assert_eq!(
                users
                    .authenticate(Some(&login(who, password)), "c")
                    .await
                    .unwrap_err(),
                Refusal::BadCredentials
            );
        }
        assert_eq!(
            users.authenticate(None, "c").await.unwrap_err(),
            Refusal::NotAuthorized
        );
    }
}
