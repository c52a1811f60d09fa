//! SORT (RFC 5256 §3, with DISPLAYFROM and DISPLAYTO from RFC 5957): the messages a search
//! matches, ordered by keys the store parsed at delivery.

use std::collections::HashMap;

use trimaran_core::delivery::retry;
use trimaran_core::store::{BlobHash, MessageMeta};

use crate::commands::search::Found;
use crate::order::{self, Item};
use crate::parser::{SearchKey, SortCriterion};
use crate::session::{Flow, Session};

impl Session {
    /// What ordering needs of the matched messages: sizes and dates from the session's view,
    /// the parsed headers from the store. None when the store failed (already answered).
    pub(crate) async fn order_items(
        &mut self,
        tag: &str,
        found: &[Found],
        uid: bool,
    ) -> Option<Vec<Item>> {
        let sel = self.selected.as_ref()?;
        let entries: Vec<_> = found
            .iter()
            .map(|&(seq, _, _)| sel.messages[seq as usize - 1].clone())
            .collect();
        let mut metas: HashMap<BlobHash, MessageMeta> = HashMap::new();
        for chunk in entries.chunks(1000) {
            let hashes: Vec<BlobHash> = chunk.iter().map(|m| m.hash).collect();
            match retry(self.wait(), || self.meta().message_metas(&hashes)).await {
                Ok(list) => metas.extend(list),
                Err(e) => {
                    self.store_failed(tag, &e);
                    return None;
                }
            }
        }
        Some(
            found
                .iter()
                .zip(entries)
                .map(|(&(seq, u, _), m)| Item {
                    number: if uid { u } else { seq },
                    position: seq as usize,
                    size: m.size,
                    arrival: m.internal_date,
                    meta: metas.get(&m.hash).cloned(),
                })
                .collect(),
        )
    }

    pub(crate) async fn sort(
        &mut self,
        tag: &str,
        uid: bool,
        criteria: Vec<SortCriterion>,
        key: SearchKey,
    ) -> Flow {
        let Some(found) = self.matching(tag, &key).await else {
            return Flow::Continue;
        };
        let Some(mut items) = self.order_items(tag, &found, uid).await else {
            return Flow::Continue;
        };
        order::sort(&mut items, &criteria);
        let mut line = String::from("SORT");
        for it in &items {
            line.push_str(&format!(" {}", it.number));
        }
        self.untagged(&line);
        let _ = self.sync(false, uid).await;
        self.ok(
            tag,
            if uid {
                "UID SORT completed"
            } else {
                "SORT completed"
            },
        );
        Flow::Continue
    }
}
