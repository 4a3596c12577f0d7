//! Who holds what of one server's connection budget, and who may take more: the policy of
//! [`super::PgPools`], kept apart from connecting so that it can be tested without a
//! server. Every method runs under the pools' one lock, so each decision sees one state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// A database stays hot this long after its last checkout or check-in, so that a fleet
/// used round-robin counts as hot as a whole even though only some of its databases have a
/// request in flight at any instant.
pub const HOT_WINDOW: Duration = Duration::from_secs(1);

/// What the policy needs to know of a connection.
pub(crate) trait Conn {
    /// The server or the network closed it: it cannot be reused.
    fn is_closed(&self) -> bool;
}

impl Conn for tokio_postgres::Client {
    fn is_closed(&self) -> bool {
        tokio_postgres::Client::is_closed(self)
    }
}

struct Idle<C> {
    conn: C,
    permit: OwnedSemaphorePermit,
    since: Instant,
}

/// One database and role's part of the budget.
struct Pool<C> {
    /// Oldest first.
    idle: Vec<Idle<C>>,
    /// Checked out, or being connected.
    busy: usize,
    /// Checkouts under way: deciding, waiting or connecting.
    queued: usize,
    last_used: Instant,
    /// Signalled when a connection comes back to this pool.
    returned: Arc<Notify>,
    /// Background work (migrations, provisioning): hot only while in use, so that its
    /// idle connections never keep requests waiting.
    background: bool,
}

impl<C> Pool<C> {
    fn held(&self) -> usize {
        self.busy + self.idle.len()
    }

    fn is_hot(&self, now: Instant) -> bool {
        self.busy > 0
            || self.queued > 0
            || (!self.background && now.duration_since(self.last_used) < HOT_WINDOW)
    }

    fn is_unused(&self) -> bool {
        self.idle.is_empty() && self.busy == 0 && self.queued == 0
    }
}

/// What a checkout does next.
pub(crate) enum Step<C> {
    /// Reuse an idle connection of its own pool.
    Reuse(C, OwnedSemaphorePermit),
    /// Open a connection under this permit: a free one, or that of `closed`, an idle
    /// connection taken out of the pools to be closed in its place.
    Open {
        permit: OwnedSemaphorePermit,
        closed: Option<C>,
    },
    /// Wait for a connection to come back, a permit to free up, or a database to go cold.
    Wait,
}

/// What became of a connection that came back.
pub(crate) enum Returned<C> {
    /// Pooled: the pool's waiters may take it.
    Pooled(Arc<Notify>),
    /// To close (if any): its permit frees up once dropped.
    Closed(Option<(C, OwnedSemaphorePermit)>),
}

/// The pools of one server under its budget.
pub(crate) struct Shares<C> {
    budget: Arc<Semaphore>,
    /// Permits of the budget.
    size: usize,
    /// By `database/role`; a pool with nothing idle, checked out or under way has no entry.
    pools: HashMap<String, Pool<C>>,
}

impl<C: Conn> Shares<C> {
    pub(crate) fn new(budget: Arc<Semaphore>, size: usize) -> Shares<C> {
        Shares {
            budget,
            size: size.max(1),
            pools: HashMap::new(),
        }
    }

    /// A checkout for `key` begins; it counts as demand until [`Shares::leave`]. Returns
    /// what signals a connection coming back to its pool.
    #[cfg(test)]
    pub(crate) fn enter(&mut self, key: &str, now: Instant) -> Arc<Notify> {
        self.enter_as(key, now, false)
    }

    /// [`Shares::enter`], saying whether the pool serves background work.
    pub(crate) fn enter_as(&mut self, key: &str, now: Instant, background: bool) -> Arc<Notify> {
        let pool = self.pools.entry(key.to_owned()).or_insert_with(|| Pool {
            idle: Vec::new(),
            busy: 0,
            queued: 0,
            last_used: now,
            returned: Arc::new(Notify::new()),
            background,
        });
        pool.queued += 1;
        pool.last_used = now;
        Arc::clone(&pool.returned)
    }

    /// The checkout that [`Shares::enter`]ed ends, with a connection or without.
    pub(crate) fn leave(&mut self, key: &str) {
        if let Some(pool) = self.pools.get_mut(key) {
            pool.queued = pool.queued.saturating_sub(1);
        }
        self.forget_if_unused(key);
    }

    /// What the checkout for `key` does now (see the module doc of `pgpool`).
    pub(crate) fn step(&mut self, key: &str, now: Instant) -> Step<C> {
        let Some(pool) = self.pools.get_mut(key) else {
            return Step::Wait;
        };
        // The most recently returned, so that the others age and close when unneeded.
        if let Some(idle) = pool.idle.pop() {
            pool.busy += 1;
            return if idle.conn.is_closed() {
                Step::Open {
                    permit: idle.permit,
                    closed: Some(idle.conn),
                }
            } else {
                Step::Reuse(idle.conn, idle.permit)
            };
        }
        let held = pool.held();
        let share = self.share(now);
        let under = held < share;
        if !under && self.needy_besides(key, share) {
            return Step::Wait;
        }
        let taken = match Arc::clone(&self.budget).try_acquire_owned() {
            Ok(permit) => Some((permit, None)),
            Err(_) => self.victim(key, under, share, now).and_then(|victim| {
                let pool = self.pools.get_mut(&victim)?;
                let idle = (!pool.idle.is_empty()).then(|| pool.idle.remove(0))?;
                self.forget_if_unused(&victim);
                Some((idle.permit, Some(idle.conn)))
            }),
        };
        match (taken, self.pools.get_mut(key)) {
            (Some((permit, closed)), Some(pool)) => {
                pool.busy += 1;
                Step::Open { permit, closed }
            }
            _ => Step::Wait,
        }
    }

    /// A connection checked out of `key` comes back: `None` if it is to be closed anyway
    /// (discarded, broken, or never connected). Pooled unless it gives way to a database
    /// waiting below its share.
    pub(crate) fn check_in(
        &mut self,
        key: &str,
        conn: Option<(C, OwnedSemaphorePermit)>,
        now: Instant,
    ) -> Returned<C> {
        let share = self.share(now);
        let oversubscribed = self.oversubscribed(now);
        let Some(pool) = self.pools.get_mut(key) else {
            return Returned::Closed(conn);
        };
        pool.busy = pool.busy.saturating_sub(1);
        pool.last_used = now;
        let (held, queued) = (pool.held(), pool.queued);
        let conn = conn.filter(|(c, _)| !c.is_closed());
        if let Some((conn, permit)) = conn {
            // More than its share, or (when the budget cannot give every hot database a
            // connection) nobody of its own waiting: a poorer database gets the permit.
            let over = held + 1 > share || (oversubscribed && queued == 0);
            if !(over && self.needy_besides(key, share)) {
                if let Some(pool) = self.pools.get_mut(key) {
                    pool.idle.push(Idle {
                        conn,
                        permit,
                        since: now,
                    });
                    return Returned::Pooled(Arc::clone(&pool.returned));
                }
            }
            self.forget_if_unused(key);
            return Returned::Closed(Some((conn, permit)));
        }
        self.forget_if_unused(key);
        Returned::Closed(None)
    }

    /// Takes out the idle connections that `close` picks (given the pool's key and the
    /// connection's idle time), and those the server closed, for the caller to close.
    pub(crate) fn take_idle_where(
        &mut self,
        now: Instant,
        mut close: impl FnMut(&str, Duration) -> bool,
    ) -> Vec<(C, OwnedSemaphorePermit)> {
        let mut closing = Vec::new();
        for (key, pool) in &mut self.pools {
            let (gone, kept) = std::mem::take(&mut pool.idle)
                .into_iter()
                .partition(|i| i.conn.is_closed() || close(key, now.duration_since(i.since)));
            pool.idle = kept;
            closing.extend(gone.into_iter().map(|i: Idle<C>| (i.conn, i.permit)));
        }
        self.pools.retain(|_, pool| !pool.is_unused());
        closing
    }

    /// Connections of `key`, idle and checked out; 0 without an entry.
    #[cfg(test)]
    fn held(&self, key: &str) -> usize {
        self.pools.get(key).map_or(0, Pool::held)
    }

    /// How many connections each hot database may count on: the budget divided by the hot
    /// databases, at least one.
    fn share(&self, now: Instant) -> usize {
        (self.size / self.hot(now).max(1)).max(1)
    }

    fn hot(&self, now: Instant) -> usize {
        self.pools.values().filter(|p| p.is_hot(now)).count()
    }

    /// More databases are hot than the budget has connections: they must take turns.
    fn oversubscribed(&self, now: Instant) -> bool {
        self.hot(now) > self.size
    }

    /// Another database has a checkout under way and holds less than its share.
    fn needy_besides(&self, key: &str, share: usize) -> bool {
        self.pools
            .iter()
            .any(|(k, p)| k != key && p.queued > 0 && p.held() < share)
    }

    /// The pool whose idle connection `key`'s checkout may close to open its own, if any:
    /// a cold database's (least recently used first) for anyone; for a database below its
    /// share also a hot one holding more than its share (the most over first), or — when
    /// oversubscribed — one with nobody of its own waiting (least recently used first).
    fn victim(&self, key: &str, under: bool, share: usize, now: Instant) -> Option<String> {
        let oversubscribed = self.oversubscribed(now);
        self.pools
            .iter()
            .filter(|(k, p)| k.as_str() != key && !p.idle.is_empty())
            .filter_map(|(k, p)| {
                let rank = if !p.is_hot(now) {
                    (0, 0)
                } else if under && p.held() > share {
                    (1, usize::MAX - (p.held() - share))
                } else if under && oversubscribed && p.queued == 0 {
                    (2, 0)
                } else {
                    return None;
                };
                Some((rank, p.last_used, k))
            })
            .min()
            .map(|(_, _, k)| k.clone())
    }

    fn forget_if_unused(&mut self, key: &str) {
        if self.pools.get(key).is_some_and(Pool::is_unused) {
            self.pools.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A connection the test can close behind the pool's back.
    struct Fake {
        closed: Arc<AtomicBool>,
    }

    impl Conn for Fake {
        fn is_closed(&self) -> bool {
            self.closed.load(Ordering::Relaxed)
        }
    }

    type Held = (Fake, OwnedSemaphorePermit);

    fn open() -> Fake {
        Fake {
            closed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Shares of a budget of `size`, and the budget.
    fn shares(size: usize) -> (Shares<Fake>, Arc<Semaphore>) {
        let budget = Arc::new(Semaphore::new(size));
        (Shares::new(Arc::clone(&budget), size), budget)
    }

    /// What a step came to: a connection, whether it was opened, and whether another
    /// pool's idle connection was closed for it.
    fn step(s: &mut Shares<Fake>, key: &str, now: Instant) -> Option<(Held, bool, bool)> {
        match s.step(key, now) {
            Step::Reuse(conn, permit) => Some(((conn, permit), false, false)),
            Step::Open { permit, closed } => Some(((open(), permit), true, closed.is_some())),
            Step::Wait => None,
        }
    }

    /// A whole checkout that does not wait: enter, step, leave.
    fn checkout(s: &mut Shares<Fake>, key: &str, now: Instant) -> Option<Held> {
        s.enter(key, now);
        let got = step(s, key, now).map(|(held, _, _)| held);
        s.leave(key);
        got
    }

    fn pooled(s: &mut Shares<Fake>, key: &str, conn: Held, now: Instant) -> bool {
        matches!(s.check_in(key, Some(conn), now), Returned::Pooled(_))
    }

    /// `clients` closed-loop clients send `requests` requests, request `i` to pool `i %
    /// pools`, each holding its connection until `clients` more were sent; a checkout that
    /// must wait is retried whenever a connection comes back. Returns how many connections
    /// were opened.
    fn round_robin(budget: usize, pools: usize, clients: usize, requests: usize) -> usize {
        let (mut s, permits) = shares(budget);
        let mut now = Instant::now();
        let mut opened = 0;
        let mut waiting: VecDeque<String> = VecDeque::new();
        let mut busy: VecDeque<(String, Held)> = VecDeque::new();
        let serve = |s: &mut Shares<Fake>,
                     waiting: &mut VecDeque<String>,
                     busy: &mut VecDeque<(String, Held)>,
                     opened: &mut usize,
                     now: Instant| {
            let mut still = VecDeque::new();
            while let Some(key) = waiting.pop_front() {
                match step(s, &key, now) {
                    Some((held, was_opened, _)) => {
                        *opened += usize::from(was_opened);
                        s.leave(&key);
                        busy.push_back((key, held));
                    }
                    None => still.push_back(key),
                }
            }
            *waiting = still;
        };
        for i in 0..requests {
            let key = format!("db{}/r", i % pools);
            s.enter(&key, now);
            waiting.push_back(key);
            serve(&mut s, &mut waiting, &mut busy, &mut opened, now);
            while busy.len() + waiting.len() >= clients {
                let (key, held) = busy.pop_front().expect("a client holds a connection");
                s.check_in(&key, Some(held), now);
                serve(&mut s, &mut waiting, &mut busy, &mut opened, now);
            }
            assert!(budget - permits.available_permits() >= busy.len());
            now += Duration::from_micros(300);
        }
        opened
    }

    #[test]
    fn round_robin_within_the_budget_opens_each_connection_once() {
        // As many databases as connections, more clients than either.
        assert_eq!(round_robin(4, 4, 6, 2_000), 4);
        assert_eq!(round_robin(20, 20, 32, 5_000), 20);
        // Fewer hot databases than connections: each grows into its share and keeps it.
        assert_eq!(round_robin(64, 50, 32, 5_000), 50);
        assert!(round_robin(20, 5, 32, 5_000) <= 20);
    }

    #[test]
    fn more_hot_databases_than_connections_take_turns() {
        // Every checkout of a database without a connection closes another's: unavoidable,
        // but each gets served.
        let opened = round_robin(4, 8, 8, 1_000);
        assert!((500..=1_000).contains(&opened), "{opened}");
    }

    #[test]
    fn background_work_keeps_no_idle_connection_from_a_request() {
        let (mut s, _) = shares(2);
        let now = Instant::now();
        // A migration's connection, back in its pool a moment ago.
        s.enter_as("store/admin", now, true);
        let (admin, _, _) = step(&mut s, "store/admin", now).unwrap();
        s.leave("store/admin");
        assert!(pooled(&mut s, "store/admin", admin, now));
        // A request holding one connection wants a second: the idle background connection
        // gives way at once instead of keeping it waiting for the hot window.
        let held = checkout(&mut s, "store/data", now).unwrap();
        s.enter("store/data", now);
        let (_second, opened, closed) = step(&mut s, "store/data", now).unwrap();
        assert!(opened && closed, "closed the background connection for it");
        drop(held);
    }

    #[test]
    fn at_its_share_a_database_waits_for_its_own_connection() {
        let (mut s, _) = shares(2);
        let now = Instant::now();
        let a = checkout(&mut s, "a/r", now).unwrap();
        let b = checkout(&mut s, "b/r", now).unwrap();
        assert!(pooled(&mut s, "b/r", b, now));
        // `b` is hot and holds its one connection, idle: `a` does not close it.
        s.enter("a/r", now);
        assert!(step(&mut s, "a/r", now).is_none());
        assert!(pooled(&mut s, "a/r", a, now));
        let (_conn1, opened, _) = step(&mut s, "a/r", now).unwrap();
        assert!(!opened, "reused its own");
    }

    #[test]
    fn a_hot_database_grows_into_the_budget_once_the_others_go_cold() {
        let (mut s, _) = shares(3);
        let t0 = Instant::now();
        for (i, key) in ["a/r", "b/r", "c/r"].into_iter().enumerate() {
            let at = t0 + Duration::from_millis(i as u64);
            let conn = checkout(&mut s, key, at).unwrap();
            assert!(pooled(&mut s, key, conn, at));
        }
        let _a1 = checkout(&mut s, "a/r", t0).unwrap();
        assert!(
            checkout(&mut s, "a/r", t0).is_none(),
            "b and c are still hot"
        );
        let later = t0 + HOT_WINDOW + Duration::from_millis(10);
        s.enter("a/r", later);
        let (_conn2, opened, closed) = step(&mut s, "a/r", later).unwrap();
        assert!(opened && closed);
        // The least recently used went first.
        assert_eq!((s.held("b/r"), s.held("c/r")), (0, 1));
        let (_conn3, _, closed) = step(&mut s, "a/r", later).unwrap();
        assert!(closed);
        assert_eq!((s.held("a/r"), s.held("c/r")), (3, 0));
        assert!(
            !s.pools.contains_key("b/r"),
            "a pool with nothing has no entry"
        );
    }

    #[test]
    fn a_database_below_its_share_takes_from_one_above_it() {
        let (mut s, _) = shares(4);
        let now = Instant::now();
        let conns: Vec<_> = (0..4).map(|_| checkout(&mut s, "a/r", now)).collect();
        for conn in conns {
            assert!(pooled(&mut s, "a/r", conn.unwrap(), now));
        }
        // Two hot databases: a share of two each.
        s.enter("b/r", now);
        let (_conn4, opened, closed) = step(&mut s, "b/r", now).unwrap();
        assert!(opened && closed);
        let (_conn5, _, closed) = step(&mut s, "b/r", now).unwrap();
        assert!(closed);
        assert!(step(&mut s, "b/r", now).is_none(), "at its share, b waits");
        assert_eq!(s.held("a/r"), 2);
    }

    #[test]
    fn a_returning_connection_gives_way_to_a_database_waiting_below_its_share() {
        let (mut s, permits) = shares(2);
        let now = Instant::now();
        let a1 = checkout(&mut s, "a/r", now).unwrap();
        let a2 = checkout(&mut s, "a/r", now).unwrap();
        s.enter("b/r", now);
        assert!(step(&mut s, "b/r", now).is_none());
        // A second checkout of `a` queued behind: `a` still holds more than its share.
        s.enter("a/r", now);
        assert!(!pooled(&mut s, "a/r", a1, now), "closed for b");
        assert_eq!(permits.available_permits(), 1);
        assert!(
            step(&mut s, "a/r", now).is_none(),
            "a at its share leaves it to b"
        );
        let (_conn6, opened, closed) = step(&mut s, "b/r", now).unwrap();
        assert!(opened && !closed);
        // Now both hold their share: a's connection goes back to a's own waiter.
        assert!(pooled(&mut s, "a/r", a2, now));
        let _a = step(&mut s, "a/r", now).expect("a's own");
    }

    #[test]
    fn oversubscribed_a_database_keeps_its_connection_only_while_it_has_a_queue() {
        let (mut s, _) = shares(2);
        let now = Instant::now();
        let a = checkout(&mut s, "a/r", now).unwrap();
        let b = checkout(&mut s, "b/r", now).unwrap();
        s.enter("c/r", now);
        assert!(step(&mut s, "c/r", now).is_none());
        s.enter("a/r", now);
        assert!(
            pooled(&mut s, "a/r", a, now),
            "a's own checkout waits for it"
        );
        assert!(
            !pooled(&mut s, "b/r", b, now),
            "b has nobody waiting: c's turn"
        );
        let _c = step(&mut s, "c/r", now).expect("c's turn");
    }

    #[test]
    fn closed_connections_are_replaced_and_idle_ones_closed_on_demand() {
        let (mut s, permits) = shares(2);
        let now = Instant::now();
        let (conn, permit) = checkout(&mut s, "a/r", now).unwrap();
        let closed = Arc::clone(&conn.closed);
        assert!(pooled(&mut s, "a/r", (conn, permit), now));
        // The server closes it while idle: the next checkout opens one under its permit.
        closed.store(true, Ordering::Relaxed);
        s.enter("a/r", now);
        let Step::Open { permit, closed } = s.step("a/r", now) else {
            panic!("a closed connection was handed out");
        };
        assert!(closed.is_some());
        s.leave("a/r");
        assert!(pooled(&mut s, "a/r", (open(), permit), now));
        // Idle connections close on demand, by idle time.
        let later = now + Duration::from_secs(60);
        let young = |_: &str, idle: Duration| idle < Duration::from_secs(30);
        assert!(s.take_idle_where(later, young).is_empty());
        assert_eq!(s.take_idle_where(later, |_, _| true).len(), 1);
        // An idle tenant costs nothing: no entry, every permit free.
        assert!(s.pools.is_empty());
        assert_eq!(permits.available_permits(), 2);
    }

    #[test]
    fn the_permits_in_use_are_the_connections_held() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (mut s, permits) = shares(5);
        let mut now = Instant::now();
        let mut waiting: Vec<String> = Vec::new();
        let mut held: Vec<(String, Held)> = Vec::new();
        for _ in 0..20_000 {
            let key = format!("db{}/r", rng.random_range(0..8));
            match rng.random_range(0..6) {
                0 => {
                    s.enter(&key, now);
                    waiting.push(key);
                }
                1 if !waiting.is_empty() => {
                    let key = waiting.swap_remove(rng.random_range(0..waiting.len()));
                    if let Some((conn, _, _)) = step(&mut s, &key, now) {
                        held.push((key.clone(), conn));
                    }
                    s.leave(&key);
                }
                2 if !held.is_empty() => {
                    let (key, (conn, permit)) = held.swap_remove(rng.random_range(0..held.len()));
                    conn.closed.store(rng.random_bool(0.05), Ordering::Relaxed);
                    let discard = rng.random_bool(0.1);
                    s.check_in(&key, (!discard).then_some((conn, permit)), now);
                }
                3 => now += Duration::from_millis(rng.random_range(0..400)),
                4 => drop(s.take_idle_where(now, |_, idle| idle > Duration::from_secs(2))),
                _ => {}
            }
            let in_pools: usize = s.pools.values().map(Pool::held).sum();
            assert_eq!(in_pools, 5 - permits.available_permits());
            assert_eq!(
                in_pools,
                held.len() + s.pools.values().map(|p| p.idle.len()).sum::<usize>()
            );
        }
    }
}
