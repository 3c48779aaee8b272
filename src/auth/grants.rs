//! What an authenticated socket may do with rooms and the global broadcast.

use crate::realtime::USER_ROOM_PREFIX;

/// Most entries a rooms claim may hold: each socket keeps its grants for its lifetime.
pub const MAX_ROOM_GRANTS: usize = 256;

/// The rooms a socket may use, and whether it may speak to everyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grants {
    /// Every room and the global `message` broadcast (`auth.mode = none`).
    All,
    /// What a token's claims grant.
    Only {
        /// Room names granted exactly.
        rooms: Vec<String>,
        /// Prefixes granted (`public:*` is stored as `public:`; `*` as the empty prefix).
        prefixes: Vec<String>,
        /// May send the global `message` broadcast.
        broadcast: bool,
    },
}

impl Grants {
    /// Grants from a rooms claim's entries; a trailing `*` matches a prefix.
    pub fn from_patterns<'a>(patterns: impl IntoIterator<Item = &'a str>, broadcast: bool) -> Self {
        let mut rooms = Vec::new();
        let mut prefixes = Vec::new();
        for pattern in patterns {
            match pattern.strip_suffix('*') {
                Some(prefix) => prefixes.push(prefix.to_owned()),
                None => rooms.push(pattern.to_owned()),
            }
        }
        Grants::Only {
            rooms,
            prefixes,
            broadcast,
        }
    }

    /// Whether the socket may join, speak in, ask or list `room`.
    ///
    /// `user:` rooms are never granted: only the server puts a socket in its own.
    pub fn allows_room(&self, room: &str) -> bool {
        if room.starts_with(USER_ROOM_PREFIX) {
            return false;
        }
        match self {
            Grants::All => true,
            Grants::Only {
                rooms, prefixes, ..
            } => {
                rooms.iter().any(|r| r == room)
                    || prefixes.iter().any(|p| room.starts_with(p.as_str()))
            }
        }
    }

    /// Whether the socket may send the global `message` broadcast.
    pub fn allows_broadcast(&self) -> bool {
        match self {
            Grants::All => true,
            Grants::Only { broadcast, .. } => *broadcast,
        }
    }

    /// Whether a rooms listing must be filtered to what this socket may see.
    pub fn is_restricted(&self) -> bool {
        !matches!(self, Grants::All)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_and_prefixes_are_granted_and_nothing_else() {
        let grants = Grants::from_patterns(["team:42", "public:*"], false);
        assert!(grants.allows_room("team:42"));
        assert!(!grants.allows_room("team:420"));
        assert!(!grants.allows_room("team:4"));
        assert!(grants.allows_room("public:lobby"));
        assert!(grants.allows_room("public:"));
        assert!(!grants.allows_room("publiclobby"));
        assert!(!grants.allows_broadcast());
    }

    #[test]
    fn user_rooms_are_never_granted_even_by_a_wildcard() {
        let grants = Grants::from_patterns(["*"], true);
        assert!(grants.allows_room("anything"));
        assert!(!grants.allows_room("user:alice"));
        assert!(!Grants::All.allows_room("user:alice"));
        assert!(Grants::All.allows_room("lobby"));
    }

    #[test]
    fn no_claim_grants_no_room() {
        let grants = Grants::from_patterns([], false);
        assert!(!grants.allows_room("lobby"));
        assert!(grants.is_restricted());
        assert!(!Grants::All.is_restricted());
    }
}
