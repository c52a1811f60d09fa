//! THREAD (RFC 5256 §4): ORDEREDSUBJECT and REFERENCES over the messages a search matches.

use crate::order;
use crate::parser::{SearchKey, ThreadAlgorithm};
use crate::session::{Flow, Session};

impl Session {
    pub(crate) async fn thread(
        &mut self,
        tag: &str,
        uid: bool,
        algorithm: ThreadAlgorithm,
        key: SearchKey,
    ) -> Flow {
        let Some(found) = self.matching(tag, &key).await else {
            return Flow::Continue;
        };
        let Some(items) = self.order_items(tag, &found, uid).await else {
            return Flow::Continue;
        };
        let threads = match algorithm {
            ThreadAlgorithm::OrderedSubject => order::ordered_subject(&items),
            ThreadAlgorithm::References => order::references(&items),
        };
        let list = order::format_threads(&threads, &items);
        if list.is_empty() {
            self.untagged("THREAD");
        } else {
            self.untagged(&format!("THREAD {list}"));
        }
        let _ = self.sync(false, uid).await;
        self.ok(
            tag,
            if uid {
                "UID THREAD completed"
            } else {
                "THREAD completed"
            },
        );
        Flow::Continue
    }
}
