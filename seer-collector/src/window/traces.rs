//! Trace assembly, the service graph and critical-path attribution.
//!
//! Spans are grouped by trace id for a short idle time. When a trace is finalized, every span
//! whose parent lives in another service adds a caller -> callee call to the graph, and if the
//! trace is slow its critical path is walked: each service is credited with the time on the
//! critical path that none of its critical children covered (its exclusive time). Those
//! credits, decayed over ticks, name the culprit when no ground truth is given.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::hash::FastMap;

/// The part of a span the assembler keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MiniSpan {
    /// Span id.
    pub span_id: u64,
    /// Parent span id (0 = root).
    pub parent: u64,
    /// Global service id.
    pub service: u32,
    /// Endpoint id (global, per name).
    pub endpoint: u32,
    /// Start, ns.
    pub start: u64,
    /// End, ns.
    pub end: u64,
    /// Error status.
    pub error: bool,
}

#[derive(Debug, Default)]
struct TraceBuf {
    spans: Vec<MiniSpan>,
    last_tick: u64,
}

/// A finalized trace's contribution.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TraceSummary {
    /// (caller, callee, error) for every cross-service parent -> child pair.
    pub calls: Vec<(u32, u32, bool)>,
    /// Whether the root was slow.
    pub slow: bool,
    /// Exclusive critical-path time per service, ns (only for slow traces).
    pub exclusive_ns: Vec<(u32, u64)>,
}

/// Groups spans by trace and finalizes traces after they go idle.
#[derive(Debug)]
pub struct TraceAssembler {
    traces: FastMap<[u8; 16], TraceBuf>,
    /// (trace, tick it was last touched at), in touch order; stale entries are skipped.
    order: VecDeque<([u8; 16], u64)>,
    max_traces: usize,
    max_spans: usize,
    max_total: usize,
    held: usize,
    idle_ticks: u64,
    /// Spans refused because a trace was full.
    pub overflow: u64,
}

impl TraceAssembler {
    /// An assembler holding at most `max_traces` traces of `max_spans` spans each and
    /// `max_total` spans in all (the oldest trace is finalized early to make room), finalizing
    /// a trace `idle_ticks` after its last span.
    pub fn new(max_traces: usize, max_spans: usize, max_total: usize, idle_ticks: u64) -> Self {
        Self {
            traces: FastMap::default(),
            order: VecDeque::new(),
            max_traces: max_traces.max(1),
            max_spans,
            max_total: max_total.max(1),
            held: 0,
            idle_ticks,
            overflow: 0,
        }
    }

    /// Traces held.
    pub fn len(&self) -> usize {
        self.traces.len()
    }

    /// Whether no trace is held.
    pub fn is_empty(&self) -> bool {
        self.traces.is_empty()
    }

    /// Spans held in all.
    pub fn spans_held(&self) -> usize {
        self.held
    }

    fn pop_oldest(&mut self) -> Option<Vec<MiniSpan>> {
        while let Some((t, at)) = self.order.pop_front() {
            if self.traces.get(&t).is_some_and(|b| b.last_tick == at) {
                let spans = self.traces.remove(&t).map(|b| b.spans);
                self.held -= spans.as_ref().map_or(0, Vec::len);
                return spans;
            }
        }
        None
    }

    /// Adds a span seen at `tick`. Returns a trace finalized early to make room, if any.
    pub fn add(&mut self, trace: [u8; 16], span: MiniSpan, tick: u64) -> Option<Vec<MiniSpan>> {
        let mut evicted = None;
        if self.held >= self.max_total
            || (!self.traces.contains_key(&trace) && self.traces.len() >= self.max_traces)
        {
            evicted = self.pop_oldest();
        }
        let buf = self.traces.entry(trace).or_insert_with(|| TraceBuf {
            spans: Vec::new(),
            last_tick: u64::MAX,
        });
        if buf.last_tick != tick {
            buf.last_tick = tick;
            self.order.push_back((trace, tick));
        }
        if buf.spans.len() < self.max_spans {
            buf.spans.push(span);
            self.held += 1;
        } else {
            self.overflow += 1;
        }
        if self.order.len() > self.max_traces.saturating_mul(8) {
            // Compact stale entries.
            let traces = &self.traces;
            self.order
                .retain(|(t, at)| traces.get(t).is_some_and(|b| b.last_tick == *at));
        }
        evicted
    }

    /// Finalizes traces idle since before `tick - idle_ticks`, oldest first, at most `limit`.
    pub fn drain_idle(&mut self, tick: u64, limit: usize) -> Vec<Vec<MiniSpan>> {
        let mut out = Vec::new();
        while out.len() < limit {
            match self.order.front() {
                Some((_, at)) if at.saturating_add(self.idle_ticks) <= tick => {}
                _ => break,
            }
            let Some((t, at)) = self.order.pop_front() else {
                break;
            };
            if self.traces.get(&t).is_some_and(|b| b.last_tick == at)
                && let Some(b) = self.traces.remove(&t)
            {
                self.held -= b.spans.len();
                out.push(b.spans);
            }
        }
        out
    }
}

/// Summarizes a finalized trace. `slow_ns(root)` gives the slow threshold for a root span.
pub fn summarize(spans: &[MiniSpan], slow_ns: impl Fn(&MiniSpan) -> u64) -> TraceSummary {
    let n = spans.len();
    // Parent index of each span (small traces: a linear scan beats building a map).
    let parent: Vec<Option<usize>> = if n <= 32 {
        spans
            .iter()
            .enumerate()
            .map(|(i, s)| {
                spans
                    .iter()
                    .position(|p| p.span_id == s.parent)
                    .filter(|p| *p != i)
            })
            .collect()
    } else {
        let mut by_id: FastMap<u64, usize> =
            FastMap::with_capacity_and_hasher(n, Default::default());
        for (i, s) in spans.iter().enumerate() {
            by_id.insert(s.span_id, i);
        }
        spans
            .iter()
            .enumerate()
            .map(|(i, s)| by_id.get(&s.parent).copied().filter(|p| *p != i))
            .collect()
    };
    let mut out = TraceSummary::default();
    for (i, p) in parent.iter().enumerate() {
        if let Some(p) = p
            && spans[*p].service != spans[i].service
        {
            out.calls
                .push((spans[*p].service, spans[i].service, spans[i].error));
        }
    }
    // The longest root is the trace's root.
    let Some(root) = (0..n)
        .filter(|i| parent[*i].is_none())
        .max_by_key(|i| spans[*i].end.saturating_sub(spans[*i].start))
    else {
        return out;
    };
    let r = &spans[root];
    if r.end.saturating_sub(r.start) <= slow_ns(r) {
        return out;
    }
    out.slow = true;
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, p) in parent.iter().enumerate() {
        if let Some(p) = p {
            children[*p].push(i);
        }
    }
    let mut excl: FastMap<u32, u64> = FastMap::default();
    // Iterative critical-path walk: (span index, the time up to which it is critical).
    let mut stack = vec![(root, spans[root].end)];
    let mut steps = 0usize;
    while let Some((i, until)) = stack.pop() {
        steps += 1;
        if steps > n * 2 + 16 {
            break; // cycles in untrusted parent links
        }
        let s = &spans[i];
        let mut cur = until.min(s.end);
        let kids = &mut children[i];
        kids.sort_by_key(|k| std::cmp::Reverse(spans[*k].end));
        for &k in kids.iter() {
            let c = &spans[k];
            if c.start >= cur || c.end <= s.start {
                continue;
            }
            let c_end = c.end.min(cur);
            *excl.entry(s.service).or_default() += cur - c_end;
            stack.push((k, c_end));
            cur = c.start.max(s.start);
            if cur <= s.start {
                break;
            }
        }
        *excl.entry(s.service).or_default() += cur.saturating_sub(s.start);
    }
    out.exclusive_ns = excl.into_iter().collect();
    out.exclusive_ns.sort_unstable();
    out
}

/// A directed caller -> callee edge with its rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    /// Caller service.
    pub caller: String,
    /// Callee service.
    pub callee: String,
    /// Calls seen since start.
    pub calls: u64,
    /// Calls that ended in error.
    pub errors: u64,
    /// Smoothed calls per second.
    pub rate_per_s: f64,
}

#[derive(Debug, Default, Clone, Copy)]
struct EdgeStat {
    calls: u64,
    errors: u64,
    in_tick: u64,
    rate: f64,
}

/// The service graph learned from spans.
#[derive(Debug, Default)]
pub struct ServiceGraph {
    edges: HashMap<(u32, u32), EdgeStat>,
    max_edges: usize,
}

impl ServiceGraph {
    /// A graph of at most `max_edges` edges.
    pub fn new(max_edges: usize) -> Self {
        Self {
            edges: HashMap::new(),
            max_edges,
        }
    }

    /// Counts one call.
    pub fn call(&mut self, caller: u32, callee: u32, error: bool) {
        if self.edges.len() >= self.max_edges && !self.edges.contains_key(&(caller, callee)) {
            return;
        }
        let e = self.edges.entry((caller, callee)).or_default();
        e.calls += 1;
        e.in_tick += 1;
        e.errors += u64::from(error);
    }

    /// Closes a tick of `tick_s` seconds: updates the smoothed rates.
    pub fn close_tick(&mut self, tick_s: f64) {
        for e in self.edges.values_mut() {
            let r = e.in_tick as f64 / tick_s.max(1e-9);
            e.rate += 0.1 * (r - e.rate);
            e.in_tick = 0;
        }
    }

    /// Edges as id pairs.
    pub fn pairs(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.edges.keys().copied()
    }

    /// Edges with names resolved by `name`.
    pub fn edges(&self, name: impl Fn(u32) -> String) -> Vec<Edge> {
        let mut v: Vec<Edge> = self
            .edges
            .iter()
            .map(|((a, b), e)| Edge {
                caller: name(*a),
                callee: name(*b),
                calls: e.calls,
                errors: e.errors,
                rate_per_s: e.rate,
            })
            .collect();
        v.sort_by(|a, b| (&a.caller, &a.callee).cmp(&(&b.caller, &b.callee)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: u64, parent: u64, svc: u32, start: u64, end: u64) -> MiniSpan {
        MiniSpan {
            span_id: id,
            parent,
            service: svc,
            endpoint: 0,
            start,
            end,
            error: false,
        }
    }

    #[test]
    fn critical_path_credits_the_slow_leaf() {
        // fe (0..100) calls a (10..30) and b (20..95); b calls c (25..90).
        let spans = vec![
            s(1, 0, 0, 0, 100),
            s(2, 1, 1, 10, 30),
            s(3, 1, 2, 20, 95),
            s(4, 3, 3, 25, 90),
        ];
        let sum = summarize(&spans, |_| 50);
        assert!(sum.slow);
        let get = |svc| {
            sum.exclusive_ns
                .iter()
                .find(|(s, _)| *s == svc)
                .map_or(0, |x| x.1)
        };
        assert_eq!(get(3), 65, "c is on the path for 25..90");
        assert_eq!(get(2), 10, "b: 20..25 and 90..95");
        assert_eq!(get(0), 15, "fe: 0..10 and 95..100");
        assert_eq!(get(1), 10, "a is critical from 10 until b starts at 20");
        assert_eq!(get(0) + get(1) + get(2) + get(3), 100);
        assert_eq!(sum.calls.len(), 3);
        assert!(!summarize(&spans, |_| 200).slow);
    }

    #[test]
    fn cycles_and_orphans_do_not_hang() {
        let spans = vec![s(1, 2, 0, 0, 10), s(2, 1, 1, 0, 10), s(3, 99, 2, 0, 100)];
        let sum = summarize(&spans, |_| 1);
        assert!(sum.slow);
    }

    #[test]
    fn assembler_is_bounded_and_drains_idle() {
        let mut a = TraceAssembler::new(2, 2, 1000, 3);
        assert!(a.add([1; 16], s(1, 0, 0, 0, 1), 0).is_none());
        a.add([1; 16], s(2, 1, 0, 0, 1), 0);
        a.add([1; 16], s(3, 1, 0, 0, 1), 0);
        assert_eq!(a.overflow, 1);
        a.add([2; 16], s(1, 0, 0, 0, 1), 5);
        let ev = a.add([3; 16], s(1, 0, 0, 0, 1), 5).expect("oldest evicted");
        assert_eq!(ev.len(), 2);
        assert!(a.drain_idle(6, 10).is_empty());
        assert_eq!(a.drain_idle(8, 10).len(), 2);
        assert!(a.is_empty());
    }

    #[test]
    fn total_span_budget_evicts_oldest() {
        let mut a = TraceAssembler::new(100, 100, 10, 1000);
        for t in 0..5u8 {
            for i in 0..4 {
                a.add([t; 16], s(i, 0, 0, 0, 1), 0);
            }
        }
        assert!(a.spans_held() <= 10);
        assert!(a.len() <= 3);
    }

    #[test]
    fn graph_rates() {
        let mut g = ServiceGraph::new(10);
        for _ in 0..10 {
            g.call(0, 1, false);
        }
        g.call(0, 1, true);
        g.close_tick(0.1);
        let e = g.edges(|i| format!("s{i}"));
        assert_eq!(e[0].calls, 11);
        assert_eq!(e[0].errors, 1);
        assert!(e[0].rate_per_s > 0.0);
    }
}
