//! The lenient reader of `data`'s fields: each read on its own terms, noting
//! what it had to overlook.

use super::*;

/// Reads fields leniently, noting each one that had to be overlooked.
pub(super) struct Fields {
    pub(super) notes: Vec<FieldNote>,
}

impl Fields {
    pub(super) fn note(&mut self, field: impl Into<String>, found: JsonType, treatment: Treatment) {
        self.notes.push(FieldNote {
            field: field.into(),
            found,
            treatment,
        });
    }

    /// Reads `raw` as `T` when it has `expected` JSON type; otherwise notes it
    /// and gives `None`. A `null` or an absent field is `None`, silently.
    pub(super) fn typed<T: DeserializeOwned>(
        &mut self,
        raw: Option<&RawValue>,
        field: &str,
        expected: JsonType,
    ) -> Option<T> {
        let raw = raw?;
        let found = JsonType::of(raw);
        if found == JsonType::Null {
            return None;
        }
        if found == expected
            && let Ok(value) = serde_json::from_str(raw.get())
        {
            return Some(value);
        }
        self.note(field, found, Treatment::Ignored);
        None
    }

    pub(super) fn string(&mut self, raw: Option<&RawValue>, field: &str) -> Option<String> {
        self.typed(raw, field, JsonType::String)
    }

    /// An identifier: a string, or an integer read as its decimal text.
    pub(super) fn id(&mut self, raw: Option<&RawValue>, field: &str) -> Option<String> {
        if let Some(raw) = raw
            && JsonType::of(raw) == JsonType::Number
        {
            let text = raw.get();
            let digits = text.strip_prefix('-').unwrap_or(text);
            // The text as sent, so a large id keeps every digit; a fraction or
            // an exponent is not an id.
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                self.note(field, JsonType::Number, Treatment::AsText);
                return Some(text.to_owned());
            }
        }
        self.string(raw, field)
    }

    /// `roomName` and `subdomain`, which the room URL needs, and the other
    /// fields every in-room event shares.
    pub(super) fn room_data(
        &mut self,
        raw: &RawData<'_>,
        options: &ParseOptions,
    ) -> Result<RoomData, ParseError> {
        let room_name = raw
            .room_name
            .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
            .ok_or_else(|| required_problem(raw.room_name, "data.roomName", "a string"))?;
        let mut subdomain = match raw.subdomain {
            Some(value) => serde_json::from_str::<String>(value.get())
                .map_err(|_| invalid("data.subdomain", "must be a string"))?,
            None => options
                .default_subdomain
                .clone()
                .ok_or(ParseError::NoSubdomain)?,
        };
        // DNS names are case-insensitive: `ACME` and `acme` are one
        // organisation, so one room key and one room URL.
        subdomain.make_ascii_lowercase();
        Ok(RoomData {
            meeting_id: self.id(raw.meeting_id, "data.meetingId"),
            room_name,
            room_session_id: self.id(raw.room_session_id, "data.roomSessionId"),
            subdomain,
        })
    }

    pub(super) fn client_data(
        &mut self,
        raw: &RawData<'_>,
        options: &ParseOptions,
    ) -> Result<ClientData, ParseError> {
        let room = self.room_data(raw, options)?;
        Ok(ClientData {
            meeting_id: room.meeting_id,
            room_name: room.room_name,
            room_session_id: room.room_session_id,
            subdomain: room.subdomain,
            display_name: self.string(raw.display_name, "data.displayName"),
            participant_id: self.id(raw.participant_id, "data.participantId"),
            metadata: self.string(raw.metadata, "data.metadata"),
            external_id: self.id(raw.external_id, "data.externalId"),
            role_name: self
                .string(raw.role_name, "data.roleName")
                .map(|name| RoleName::from(name.as_str())),
            num_clients: self.typed(raw.num_clients, "data.numClients", JsonType::Number),
            num_clients_by_role_name: self.counts(raw.num_clients_by_role_name),
            is_dial_in: self.typed(raw.is_dial_in, "data.isDialIn", JsonType::Bool),
        })
    }

    /// `numClientsByRoleName`: all or nothing, since a map missing a role
    /// would misstate who is in the room.
    pub(super) fn counts(&mut self, raw: Option<&RawValue>) -> Option<BTreeMap<RoleName, u32>> {
        const FIELD: &str = "data.numClientsByRoleName";
        let raw = raw?;
        let entries = match JsonType::of(raw) {
            JsonType::Null => return None,
            JsonType::Object => {
                serde_json::from_str::<BTreeMap<RoleName, &RawValue>>(raw.get()).ok()
            }
            _ => None,
        };
        let Some(entries) = entries else {
            self.note(FIELD, JsonType::of(raw), Treatment::Ignored);
            return None;
        };
        let mut counts = BTreeMap::new();
        for (role, value) in entries {
            match serde_json::from_str::<u32>(value.get()) {
                Ok(n) => {
                    counts.insert(role, n);
                }
                Err(_) => {
                    self.note(
                        format!("{FIELD}.{}", role.as_str()),
                        JsonType::of(value),
                        Treatment::Ignored,
                    );
                    return None;
                }
            }
        }
        Some(counts)
    }
}
