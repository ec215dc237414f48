//! Building and queueing responses: every response goes through here, so signing, FINGERPRINT
//! and the transaction cache are applied in one place.

use std::net::SocketAddr;
use std::time::Instant;

use super::{Command, Server};
use crate::auth::IntegrityKey;
use crate::auth::credentials::OFFERED_PASSWORD_ALGORITHMS;
use crate::stun::{Attribute, Class, ErrorCode, MessageType, MessageWriter, Method, TransactionId};
use crate::types::FiveTuple;

/// Responses are small: the largest is an Allocate success with both addresses, well under this.
const RESPONSE_BUF: usize = 1024;

/// What a response answers.
#[derive(Debug, Clone, Copy)]
pub(super) struct Answer {
    pub five_tuple: FiveTuple,
    pub method: Method,
    pub transaction_id: TransactionId,
    /// Mirror the request: FINGERPRINT only when it had one (8 bytes less to amplify).
    pub fingerprint: bool,
}

/// Whether an unsigned response spends its source's unauthenticated budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Budget {
    /// Counted against the per-source limit (anyone can cause it with a spoofed source).
    Spend,
    /// Not counted: owed to a request whose integrity verified, from a live allocation.
    Exempt,
}

impl Server {
    fn encode(
        &self,
        to: &Answer,
        error: Option<ErrorCode>,
        attrs: &[Attribute<'_>],
        key: Option<&IntegrityKey>,
    ) -> Option<Vec<u8>> {
        let mut buf = [0u8; RESPONSE_BUF];
        let class = if error.is_some() {
            Class::Error
        } else {
            Class::Success
        };
        let encoded = (|| {
            let mut w = MessageWriter::new(
                &mut buf,
                MessageType::new(to.method, class),
                to.transaction_id,
            )?;
            if let Some(code) = error {
                w.add(&Attribute::ErrorCode {
                    code: code.0,
                    reason: code.reason(),
                })?;
            }
            for a in attrs {
                w.add(a)?;
            }
            if let Some(software) = &self.config.software {
                w.add(&Attribute::Software(software))?;
            }
            if let Some(key) = key {
                key.sign(&mut w)?;
            }
            if to.fingerprint {
                w.add_fingerprint()?;
            }
            Ok::<usize, crate::stun::EncodeError>(w.finish())
        })();
        match encoded {
            Ok(n) => buf.get(..n).map(<[u8]>::to_vec),
            Err(e) => {
                tracing::warn!(error = %e, "could not encode response");
                None
            }
        }
    }

    fn queue(&mut self, to: &Answer, data: Vec<u8>) {
        self.commands.push_back(Command::SendToClient {
            five_tuple: to.five_tuple,
            data,
        });
    }

    /// A response to an authenticated request: signed, fingerprinted, cached for retransmits.
    pub(super) fn reply_signed(
        &mut self,
        now: Instant,
        to: &Answer,
        error: Option<ErrorCode>,
        attrs: &[Attribute<'_>],
        key: &IntegrityKey,
    ) {
        if let Some(data) = self.encode(to, error, attrs, Some(key)) {
            self.transactions
                .insert(to.five_tuple, to.transaction_id, data.clone(), now);
            self.queue(to, data);
        }
    }

    /// A signed error response with no other attributes.
    pub(super) fn reply_error(
        &mut self,
        now: Instant,
        to: &Answer,
        code: ErrorCode,
        key: &IntegrityKey,
    ) {
        self.reply_signed(now, to, Some(code), &[], key);
    }

    /// An unsigned response (Binding, 400, 420, or an error before authentication): anyone can
    /// cause one with a spoofed source, so each source gets only so many per second.
    pub(super) fn reply_unsigned(
        &mut self,
        now: Instant,
        to: &Answer,
        error: Option<ErrorCode>,
        attrs: &[Attribute<'_>],
    ) {
        self.reply_unsigned_with(now, to, error, attrs, Budget::Spend);
    }

    fn reply_unsigned_with(
        &mut self,
        now: Instant,
        to: &Answer,
        error: Option<ErrorCode>,
        attrs: &[Attribute<'_>],
        budget: Budget,
    ) {
        if budget == Budget::Spend && !self.limiter.allow(to.five_tuple.client.addr().ip(), now) {
            self.stats.drop_packet(super::DropReason::RateLimited);
            return;
        }
        if let Some(data) = self.encode(to, error, attrs, None) {
            self.queue(to, data);
        }
    }

    /// 401 or 438 with REALM, a fresh NONCE and PASSWORD-ALGORITHMS (RFC 8489 §9.2.4).
    pub(super) fn reply_challenge(
        &mut self,
        now: Instant,
        to: &Answer,
        code: ErrorCode,
        budget: Budget,
    ) {
        let client: SocketAddr = to.five_tuple.client.addr();
        let nonce = self.nonces.issue(client, self.unix_now_ms(now));
        let realm = self.config.realm.clone();
        self.reply_unsigned_with(
            now,
            to,
            Some(code),
            &[
                Attribute::Realm(&realm),
                Attribute::Nonce(&nonce),
                Attribute::PasswordAlgorithms(&OFFERED_PASSWORD_ALGORITHMS),
            ],
            budget,
        );
    }

    /// Resends a cached response; true when there was one.
    pub(super) fn replay_cached(&mut self, now: Instant, to: &Answer) -> bool {
        let Some(data) = self
            .transactions
            .get(&to.five_tuple, &to.transaction_id, now)
            .map(<[u8]>::to_vec)
        else {
            return false;
        };
        self.queue(to, data);
        true
    }
}
