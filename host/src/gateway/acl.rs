//! Topic permissions of one connection, from its user's `publish` and
//! `subscribe` filters in the manifest.

use crate::manifest::BrokerUser;

#[derive(Debug, Clone)]
pub struct Permissions {
    publish: Vec<String>,
    subscribe: Vec<String>,
}

impl Permissions {
    /// Everything: anonymous clients, where the manifest allows them.
    pub fn all() -> Self {
        Self {
            publish: vec!["#".into()],
            subscribe: vec!["#".into()],
        }
    }

    /// `user`'s filters with `%u` and `%c` filled in. A filter whose
    /// placeholder would be filled with a wildcard or separator is dropped:
    /// a client picks its own id, and must not widen its rights with it.
    pub fn of(user: &BrokerUser, username: &str, client_id: &str) -> Self {
        let fill = |filters: &[String]| -> Vec<String> {
            filters
                .iter()
                .filter_map(|filter| {
                    let uses = |p: &str, value: &str| {
                        filter.contains(p) && value.contains(['+', '#', '/'])
                    };
                    if uses("%u", username) || uses("%c", client_id) {
                        return None;
                    }
                    Some(filter.replace("%u", username).replace("%c", client_id))
                })
                .collect()
        };
        Self {
            publish: fill(&user.publish),
            subscribe: fill(&user.subscribe),
        }
    }

    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish.iter().any(|allowed| within(topic, allowed))
    }

    pub fn may_subscribe(&self, filter: &str) -> bool {
        // A shared subscription ($share/group/filter) reads `filter`.
        let filter = filter
            .strip_prefix("$share/")
            .and_then(|rest| rest.split_once('/'))
            .map_or(filter, |(_group, filter)| filter);
        self.subscribe.iter().any(|allowed| within(filter, allowed))
    }
}

/// Whether everything `filter` matches is also matched by `allowed` (a
/// topic name is a filter without wildcards). As in matching, a wildcard
/// first level does not reach `$` topics.
fn within(filter: &str, allowed: &str) -> bool {
    if filter.starts_with('$') && allowed.starts_with(['+', '#']) {
        return false;
    }
    let mut filter = filter.split('/');
    let mut allowed = allowed.split('/');
    loop {
        match (allowed.next(), filter.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(a), Some(f)) if a == f && a != "+" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_is_within_an_allowed_one_only_if_it_matches_nothing_more() {
        for (filter, allowed, expected) in [
            ("a/b", "a/b", true),
            ("a/b", "a/+", true),
            ("a/+", "a/+", true),
            ("a/#", "a/+", false),
            ("a/+", "a/b", false),
            ("a", "a/#", true),
            ("a/b/c", "a/#", true),
            ("a/#", "a/#", true),
            ("#", "a/#", false),
            ("b/c", "a/#", false),
            ("a/b", "#", true),
            ("$SYS/x", "#", false),
            ("$SYS/x", "$SYS/#", true),
            ("a/b/c", "a/+", false),
        ] {
            assert_eq!(
                within(filter, allowed),
                expected,
                "{filter} within {allowed}"
            );
        }
    }

    fn user(publish: &[&str], subscribe: &[&str]) -> BrokerUser {
        BrokerUser {
            password_hash: String::new(),
            publish: publish.iter().map(|s| s.to_string()).collect(),
            subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn placeholders_are_filled_but_cannot_widen_rights() {
        let user = user(&["devices/%c/cmd", "users/%u/#"], &["#"]);
        let alice = Permissions::of(&user, "alice", "press1");
        assert!(alice.may_publish("devices/press1/cmd"));
        assert!(alice.may_publish("users/alice/x"));
        assert!(!alice.may_publish("devices/press2/cmd"));
        let sneaky = Permissions::of(&user, "alice", "#");
        assert!(!sneaky.may_publish("devices/press2/cmd"));
        assert!(sneaky.may_publish("users/alice/x"));
    }

    #[test]
    fn shared_subscriptions_are_checked_on_their_filter() {
        let reader = Permissions::of(&user(&[], &["plant/#"]), "r", "c");
        assert!(reader.may_subscribe("$share/g/plant/line1/#"));
        assert!(!reader.may_subscribe("$share/g/#"));
    }
}
