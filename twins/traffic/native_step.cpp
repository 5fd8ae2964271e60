// The traffic step (rules 2-6 and 8-10 of twins/traffic/kernels.py) as one loop per world, for the CPU.
//
// Same rules, same operations in the same order and precision as the tensor kernels, so the numbers
// are bit-identical (tests/traffic/test_native_step.py). Why it exists: the tensor kernels make
// ~150 passes over memory per step; here each vehicle is visited a few times with its data in cache.
// Built on first use by twins/traffic/native.py (c++ -O3 -ffp-contract=off: no FMA contraction, no
// fast-math, so every operation is correctly rounded as in the tensor code). Worlds are independent:
// the caller runs ranges of worlds on several threads. Bus stops (rule 7) stay on the tensor path.
//
// Layout: state and vehicle columns are [W, S] row-major; leaders and lane tails are slots within
// the world; only slots in the window [lo, hi) can be waiting-and-due, running, or just arrived.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

constexpr int64_t WAITING = 0, RUNNING = 1, ARRIVED = 2;
constexpr int64_t SIG_GREEN = 0, SIG_YELLOW = 1, SIG_RED = 2, SIG_GREEN_MINOR = 3;
constexpr int64_t KRAUSS = 1;  // kernels.KRAUSS
constexpr double NUMERICAL_EPS = 1e-6;  // kernels.NUMERICAL_EPS
constexpr double STANDING_EPS = 1e-3;  // kernels.STANDING_EPS
constexpr double STOP_GAP_EPS = 0.01;  // kernels.STOP_GAP_EPS
constexpr double SPEED_SUM_SCALE = 4294967296.0;  // kernels.SPEED_SUM_SCALE: speeds summed as integers of 2^-32 m/s
constexpr int64_t ZONE_BINS = 16;  // kernels.ZONE_BINS
constexpr double TIME_TO_IMPATIENCE_S = 180.0;  // kernels.TIME_TO_IMPATIENCE_S

// a if c else b (torch.where), by masks: gcc turns a ?: on integers into a branch where it likes, and a branch
// on a coin flip (which connection of a lane a vehicle takes, whether its link is red) costs more than both loads
inline int64_t where(bool c, int64_t a, int64_t b) {
    const int64_t m = -int64_t(c);
    return (a & m) | (b & ~m);
}

// Field order and types must match _Args in twins/traffic/native.py (all fields 8 bytes wide).
struct Args {
    int64_t W, S, lo, hi, L, M, J, G, E, max_lanes, substeps, insert_rounds, delta_shared, step_index,
        need_sort, has_conn, has_turn, cf, has_foes, C, NF, w0, w1, lane_change;
    double t, dt;
    // state [W, S]
    int64_t *status, *lane, *route_pos, *insert_step, *arrive_step, *leader;
    void *pos, *speed, *time_loss;
    int32_t *stops;
    uint8_t *halted;
    const double *depart;
    // vehicle parameters [W, S]
    const int64_t *route, *delta;
    const void *length, *min_gap, *accel, *decel, *two_sqrt_ab, *tau, *speed_factor, *max_speed, *depart_speed;
    // per world and lane: tails [W, L] (in/out), observation sums [W * L, 3] (accumulated)
    int64_t *lane_last;
    double *lane_acc;
    // network and routes
    const void *lane_length, *lane_speed, *conn_via;
    const int64_t *edge_first_lane, *edge_n_lanes, *lane_conn_edge, *lane_conn, *conn_link;
    const int64_t *route_edges, *route_mask, *route_len;
    const void *route_turn_speed;  // [R, M] T: rule 8's turning speed after each route edge (+inf: none)
    const int8_t *sig;  // [W, G]
    int64_t *resorted;  // [W] out: 1 where the carried order failed its check and the lanes were sorted
    const void *sigma;   // [W, S] T: Krauss dawdling (rule 9)
    const void *dawdle;  // [W, hi - lo] T: this step's dawdling draws of the window (null: no dawdling)
    int64_t *conn;  // [W, S] state: the connection a vehicle entered its lane by (rule 10)
    const uint8_t *conn_yield;  // [C] minor unsignalized connections (rule 10)
    const uint8_t *conn_zipper;  // [C] links of a zipper merge: the first to arrive goes (rule 10)
    const int64_t *conn_foes;  // [C, NF] the connections each yields to, -1 padded
    // rule 11 (lane changing; read only with lane_change)
    int64_t *lc_yield;  // [W, S] state: the neighbour a vehicle also follows (one it lets in, or falls behind), -1: none
    const int64_t *conn_to_mask;  // [C] the lanes of its to-edge each connection leads to (bitmask; also rule 10)
    const int64_t *route_best_mask;  // [R, M] the best lanes of each route edge (bitmask)
    const int64_t *lane_edge, *lane_index;  // [L] each lane's edge and index within it
    // rule 10's cautious approach and merges
    const void *conn_wait, *conn_visibility;  // [C] T: where a minor link's vehicle waits past the line; its sight
    const int64_t *conn_to_edge;  // [C] each connection's to-edge
    const uint8_t *conn_keep_clear;  // [C] rule 4: entered only when the junction can be cleared
    const int64_t *conn_zone;  // [C, NF] the parts of each foe's path this connection crosses (bitmask)
    // rule 10's same-source foes: the other connections out of each one's lane (-1 padded) and where their paths part
    const int64_t *conn_sib;  // [C, J]
    const void *conn_div, *conn_div_foe;  // [C, J] T: past the line on this path, and on the other's
    const void *conn_zone_at;  // [C, NF] T: m along its own path to where each foe's path crosses it (0: unknown)
    int32_t *wait;  // [W, S] steps each vehicle has stood (rule 12's counter): rule 10's impatience (null: 0);
                    // counted on here after the step (TrafficTwin.step counts for the tensor kernels)
    void *lc_stop;  // [W, S] T state (rule 11): where on its lane a vehicle stops next step (+inf: anywhere)
    const void *route_ahead_m;  // [R, M] T: the look-ahead's length after each route edge (rule 11's keep-right)
    void *lc_keep_right;  // [W, S] T state (rule 11): LC2013's keep-right sum
    void *lc_look_ahead_speed;  // [W, S] T state (rule 11): LC2013's look-ahead speed
    const void *route_lane_cont;  // [R, M, max_lanes] T (rule 11): each lane's continuation on the route, LaneQ.length
};

// torch.clamp(x, min=m) / torch.clamp(x, max=m): NaN stays NaN
template <typename T> inline T clamp_min(T x, T m) { return x < m ? m : x; }
// torch.minimum: NaN if either is NaN
template <typename T> inline T minimum(T a, T b) {
    return (a != a || b != b) ? std::numeric_limits<T>::quiet_NaN() : (b < a ? b : a);
}
// torch.maximum: NaN if either is NaN
template <typename T> inline T maximum(T a, T b) {
    return (a != a || b != b) ? std::numeric_limits<T>::quiet_NaN() : (b > a ? b : a);
}
template <typename T> struct World {
    const Args &a;
    int64_t *status, *lane, *rpos, *insert_step, *arrive_step, *leader, *last, *conn, *lc_yield;
    T *pos, *speed, *time_loss, *lc_stop, *lc_kr, *lc_las;
    int32_t *stops;
    uint8_t *halted;
    const double *depart;
    const int64_t *route, *delta;
    const T *length, *min_gap, *accel, *decel, *tsab, *tau, *speed_factor, *max_speed, *sigma, *dawdle, *depart_speed;
    const T *lane_length, *lane_speed, *conn_via, *turn, *conn_wait, *conn_vis, *conn_div, *conn_div_foe;
    const int8_t *sig;
    int32_t *wait;
    double *acc;

    World(const Args &a_, int64_t w) : a(a_) {
        const int64_t b = w * a.S;
        status = a.status + b; lane = a.lane + b; rpos = a.route_pos + b; insert_step = a.insert_step + b;
        arrive_step = a.arrive_step + b; leader = a.leader + b; last = a.lane_last + w * a.L; conn = a.conn + b;
        lc_yield = a.lane_change ? a.lc_yield + b : nullptr;
        lc_stop = a.lane_change && a.lc_stop ? static_cast<T *>(a.lc_stop) + b : nullptr;
        lc_kr = a.lane_change && a.lc_keep_right ? static_cast<T *>(a.lc_keep_right) + b : nullptr;
        lc_las = a.lane_change && a.lc_look_ahead_speed ? static_cast<T *>(a.lc_look_ahead_speed) + b : nullptr;
        pos = static_cast<T *>(a.pos) + b; speed = static_cast<T *>(a.speed) + b;
        time_loss = static_cast<T *>(a.time_loss) + b; stops = a.stops + b; halted = a.halted + b;
        depart = a.depart + b; route = a.route + b; delta = a.delta + b;
        length = static_cast<const T *>(a.length) + b; min_gap = static_cast<const T *>(a.min_gap) + b;
        accel = static_cast<const T *>(a.accel) + b; decel = static_cast<const T *>(a.decel) + b;
        tsab = static_cast<const T *>(a.two_sqrt_ab) + b; tau = static_cast<const T *>(a.tau) + b;
        speed_factor = static_cast<const T *>(a.speed_factor) + b;
        max_speed = static_cast<const T *>(a.max_speed) + b;
        depart_speed = static_cast<const T *>(a.depart_speed) + b;
        sigma = static_cast<const T *>(a.sigma) + b;
        dawdle = a.dawdle ? static_cast<const T *>(a.dawdle) + w * (a.hi - a.lo) : nullptr;
        lane_length = static_cast<const T *>(a.lane_length); lane_speed = static_cast<const T *>(a.lane_speed);
        conn_via = static_cast<const T *>(a.conn_via);
        conn_wait = static_cast<const T *>(a.conn_wait); conn_vis = static_cast<const T *>(a.conn_visibility);
        conn_div = static_cast<const T *>(a.conn_div); conn_div_foe = static_cast<const T *>(a.conn_div_foe);
        turn = static_cast<const T *>(a.route_turn_speed);
        sig = a.sig + w * a.G;
        wait = a.wait ? a.wait + b : nullptr;
        acc = a.lane_acc + w * a.L * 3;
    }

    // kernels.link_codes: the signal code a link shows in this world (no signal: green)
    int64_t link_code(int64_t link) const {  // (selects on the link: whether it has one is a coin flip)
        if (!a.G) return SIG_GREEN;
        const int64_t code = sig[where(link < 0, 0, std::min(link, a.G - 1))];
        return where(link >= 0, code, SIG_GREEN);
    }

    // kernels.choose_lane: the allowed lane of `edge` with most room (lowest index on ties); `tails`: the lane
    // tails to look at (null: the lanes' own)
    int64_t choose_lane(int64_t edge, int64_t mask, T &room, const int64_t *tails = nullptr) const {
        if (tails == nullptr) tails = last;
        const T inf = std::numeric_limits<T>::infinity();
        const int64_t e = edge < 0 ? 0 : edge;
        const int64_t first = a.edge_first_lane[e], n_here = a.edge_n_lanes[e];
        int64_t best = -1;
        room = -inf;
        for (int64_t j = 0; j < a.max_lanes; ++j) {
            const bool ok = edge >= 0 && j < n_here && ((mask >> j) & 1) == 1;
            T score = -inf;
            if (ok) {
                const int64_t lv = tails[first + j];
                score = lv >= 0 ? pos[lv] - length[lv] : inf;
            }
            if (j == 0) { best = ok ? first : -1; room = score; }
            else if (score > room) { best = first + j; room = score; }
        }
        return best;
    }

    // kernels.lane_order for this world: leaders and tails by sorting the running vehicles
    void sort_lanes(std::vector<int64_t> &idx) {
        idx.clear();
        for (int64_t s = a.lo; s < a.hi; ++s)
            if (status[s] == RUNNING) idx.push_back(s);
        std::sort(idx.begin(), idx.end(), [this](int64_t p, int64_t q) {
            if (lane[p] != lane[q]) return lane[p] < lane[q];
            if (pos[p] != pos[q]) return pos[p] < pos[q];
            return p < q;
        });
        std::fill(last, last + a.L, int64_t(-1));
        for (size_t i = 0; i < idx.size(); ++i) {
            const int64_t s = idx[i];
            const bool same_next = i + 1 < idx.size() && lane[idx[i + 1]] == lane[s];
            leader[s] = same_next ? idx[i + 1] : -1;
            if (i == 0 || lane[idx[i - 1]] != lane[s]) last[lane[s]] = s;
        }
    }
};

// x ** n for 0 <= n < 2^(TOP + 1): the factors x, x^2, x^4, x^8 of n's bits multiplied in kernels.int_pow's order
// (the same numbers as kernels._pow, since 1 * y == y; vehicle types have 1 <= delta <= 15). Factors above 2^TOP
// are not computed: one that is not used can still underflow to a subnormal (x^8 of a creeping vehicle's v/v0),
// and the CPU's slow path for those made the whole IDM loop four times slower on the grid.
template <typename T, int TOP = 3> inline T pow4(T x, int64_t n) {
    const T one = T(1);
    T r = one * ((n & 1) ? x : one);
    if constexpr (TOP >= 1) {
        const T x2 = x * x;
        r = r * ((n & 2) ? x2 : one);
        if constexpr (TOP >= 2) {
            const T x4 = x2 * x2;
            r = r * ((n & 4) ? x4 : one);
            if constexpr (TOP >= 3) r = r * ((n & 8) ? x4 * x4 : one);
        }
    }
    return r;
}

// kernels.arrival_time (SUMO's MSCFModel::estimateArrivalTime): accelerating at a up to vmax over d
template <typename T> inline T arrival_time(T d, T v, T a, T vmax) {
    v = minimum(v, vmax);
    const T d1 = (vmax * vmax - v * v) / (T(2.0) * a);
    const T accelerating = (std::sqrt(v * v + T(2.0) * a * d) - v) / a;
    const T cruising = (vmax - v) / a + (d - d1) / vmax;
    return d <= d1 ? accelerating : cruising;
}

// kernels.leave_time (SUMO's MSLink::getLeaveTime): the arrival plus path and length at the mean of the speeds at
// the line and leaving the path
template <typename T> inline T leave_time(T t_arr, T v_arr, T v_out, T via, T len) {
    return t_arr + (via + len) / clamp_min(T(0.5) * (v_arr + v_out), T(NUMERICAL_EPS));
}
// kernels.line_speeds: the speeds at the line and at the end of the link's path (SUMO's estimatedLeaveSpeed)
template <typename T> inline void line_speeds(T d, T via, T v, T a, T vmax, T &v_arr, T &v_out) {
    const T v0 = minimum(v, vmax);
    v_arr = minimum(T(std::sqrt(v0 * v0 + T(2) * a * clamp_min(d, T(0)))), vmax);
    v_out = minimum(T(std::sqrt(v_arr * v_arr + T(2) * a * via)), vmax);
}
// kernels.merge_unsafe (SUMO's unsafeMergeSpeeds): merging ahead of a foe that could not brake to below its speed
template <typename T> inline bool merge_unsafe(T v_leave, T decel, T t_arr, T imp, T foe_d, T foe_v, T foe_decel) {
    const T m = imp > T(0) ? foe_decel * imp : foe_decel;
    const T dist = imp > T(0) ? foe_d - foe_v * clamp_min(t_arr, T(0)) : foe_d;
    const T v2 = clamp_min(foe_v * foe_v - T(2) * m * dist, T(0));
    return v_leave * v_leave / decel <= v2 / foe_decel;
}

// kernels.brake_gap (SUMO's MSCFModel::brakeGapEuler)
template <typename T> inline T brake_gap(T v, T decel, T tau, double dt_) {
    const T dt = T(dt_), r = decel * dt;
    const T n = std::floor(v / r);
    return (n * v - r * n * (n + T(1.0)) / T(2.0)) * dt + v * tau;
}

// kernels.secure_gap (SUMO's MSCFModel::getSecureGap): brakeGap(v, decel, tau) - brakeGap(v_lead, decel, 0), >= 0
template <typename T> inline T secure_gap(T v, T v_lead, T decel, T tau, double dt_) {
    return clamp_min(brake_gap<T>(v, decel, tau, dt_) - brake_gap<T>(v_lead, decel, T(0), dt_), T(0));
}

// kernels.stops_at_yellow: SUMO's canBrake at a yellow light (Euler brake gap without reaction time, or slower
// than one step's braking)
template <typename T> inline bool stops_at_yellow(T v, T decel, T d, double dt_) {
    return brake_gap<T>(v, decel, T(0), dt_) < d || v < decel * T(dt_);
}

// kernels.stop_line: the point short of the line where a vehicle d m before a red (or a yellow it stops for)
// stops, as the distance left to the line (SUMO's jmStoplineGap, 1 m, less where its brakes need the room)
template <typename T> inline T stop_line(T v, T d, T decel, double dt_) {
    const T bg = brake_gap<T>(v, decel < T(3.0) ? T(3.0) : decel, T(0), dt_);  // kernels.TLS_YELLOW_MIN_DECEL
    T off = d >= bg ? (d - bg < T(1.0) ? d - bg : T(1.0)) : T(1.0);  // kernels.JM_STOPLINE_GAP_M
    off = off < T(0.1) ? T(0.1) : off;  // kernels.POSITION_EPS_M
    return d - off < T(0) ? T(0) : d - off;
}

// kernels.safe_stop_speed (SUMO's MSCFModel::maximumSafeStopSpeedEuler)
template <typename T> inline T safe_stop_speed(T gap, T decel, T tau, double dt_) {
    if (!std::isfinite(gap)) return gap;  // +inf: a free road
    const T dt = T(dt_);
    const T g = gap - T(NUMERICAL_EPS);
    if (g < T(0)) return T(0);
    const T b = decel * dt;
    const T n = std::floor(T(0.5) - ((tau + std::sqrt(T(dt_ * dt_) + T(4.0) * (dt * (T(2.0) * g / b - tau) + tau * tau)) *
                                                T(-0.5)) / dt));
    const T h = T(0.5) * n * (n - T(1.0)) * b * dt + n * b * tau;
    return n * b + (g - h) / (n * dt + tau);
}

// kernels.free_speed (SUMO's generic MSCFModel::freeSpeed, Euler)
template <typename T> inline T free_speed(T d, T u, T decel, double dt_) {
    const T dt = T(dt_);
    const T vt = u * dt;
    if (d < vt) return u;
    const T b = decel * T(dt_ * dt_);
    const T y = clamp_min(((std::sqrt((b + T(2.0) * vt) * (b + T(2.0) * vt) + T(8.0) * b * d) - b) * T(0.5) - vt) / b, T(0));
    const T yf = std::floor(y);
    const T exact = (yf * yf + yf) * T(0.5) * b + yf * vt + (y > yf ? vt : T(0));
    return clamp_min(d - exact, T(0)) / (yf + T(1.0)) / dt + yf * (decel * dt) + u;
}

// kernels.krauss_speed (rule 9) for one vehicle; `u` < 0: no dawdling
template <typename T>
T krauss_speed(T v, T v0, T gap, T v_lead, T s0, T accel, T decel, T tau, T sigma, T u, T v_cap, double dt_) {
    const T dt = T(dt_);
    const T v_safe = safe_stop_speed<T>(gap - s0 + brake_gap<T>(v_lead, decel, T(0), dt_), decel, tau, dt_);
    const T v_max = minimum(minimum(minimum(v0, v + accel * dt), v_safe), v_cap);
    if (u < T(0)) return v_max;
    const T v_min = minimum(clamp_min(v - decel * dt, T(0)), v_max);
    const T red = (v_max < accel ? sigma * v_max * u : sigma * accel * u) * dt;
    return maximum(v_min, clamp_min(v_max - red, T(0)));
}

// One IDM sub-step for n vehicles (the body of kernels.idm_speed). Templated on whether every vehicle shares
// the exponent and whether the gap is carried to another sub-step, so that the loop has no branches and
// the compiler vectorizes it.
template <typename T, bool SHARED, bool UPDATE_GAP, int TOP = 3>
void idm_substep(int64_t n, T *__restrict v, T *__restrict g, const T *__restrict v0, const T *__restrict v_lead,
                 const T *__restrict accel, const T *__restrict tsab, const T *__restrict tau,
                 const T *__restrict s0, int64_t delta_shared, const int64_t *__restrict delta, T h) {
    for (int64_t i = 0; i < n; ++i) {
        const T s_star = s0[i] + clamp_min(v[i] * tau[i] + v[i] * (v[i] - v_lead[i]) / tsab[i], T(0));
        const T ratio = s_star / clamp_min(g[i], T(1e-3));
        const T p = pow4<T, TOP>(v[i] / v0[i], SHARED ? delta_shared : delta[i]);
        const T acc = accel[i] * (T(1.0) - p - ratio * ratio);
        const T vn = clamp_min(v[i] + acc * h, T(0));
        if (UPDATE_GAP) g[i] = g[i] - clamp_min((vn - v_lead[i]) * h, T(0));
        v[i] = vn;
    }
}

// kernels.idm_speed for n vehicles: `substeps` IDM sub-steps with the leader's speed held (`v` and `g`: in, the
// speed and gap; out, the speed and the gap left)
template <typename T>
void idm_run(int64_t n, T *v, T *g, const T *v0, const T *v_lead, const T *accel, const T *tsab, const T *tau,
             const T *s0, int64_t delta_shared, const int64_t *delta, double dt_, int64_t substeps) {
    const T h = T(dt_ / double(substeps));
    const bool more = substeps > 1;
    // only the powers of x the exponents' bits need (pow4's TOP): IDM's 4 needs x^2 and x^4
    int64_t most = delta_shared;
    if (delta_shared < 0)  // one per vehicle: the largest decides
        for (int64_t i = 0; i < n; ++i) most = delta[i] > most ? delta[i] : most;
    const int top = most >= 8 ? 3 : most >= 4 ? 2 : most >= 2 ? 1 : 0;
    const bool shared = delta_shared >= 0;
    for (int64_t k = 0; k < substeps; ++k) {
#define TWINS_IDM_SUBSTEP(SH, TOP) \
        (more ? idm_substep<T, SH, true, TOP>(n, v, g, v0, v_lead, accel, tsab, tau, s0, delta_shared, delta, h) \
              : idm_substep<T, SH, false, TOP>(n, v, g, v0, v_lead, accel, tsab, tau, s0, delta_shared, delta, h))
        if (top == 3) shared ? TWINS_IDM_SUBSTEP(true, 3) : TWINS_IDM_SUBSTEP(false, 3);
        else if (top == 2) shared ? TWINS_IDM_SUBSTEP(true, 2) : TWINS_IDM_SUBSTEP(false, 2);
        else if (top == 1) shared ? TWINS_IDM_SUBSTEP(true, 1) : TWINS_IDM_SUBSTEP(false, 1);
        else shared ? TWINS_IDM_SUBSTEP(true, 0) : TWINS_IDM_SUBSTEP(false, 0);
#undef TWINS_IDM_SUBSTEP
    }
}

// kernels.idm_move for n vehicles: IDM in `substeps` with the leader's speed held, the speed capped so the
// physical gap cannot close below zero, then x + v*dt. `v` and `g` are scratch (in: speed and gap).
template <typename T>
void idm_move(int64_t n, T *v, T *g, const T *x_in, const T *v0, const T *v_lead, const T *v_cap, const T *gap_phys,
              const T *accel, const T *tsab, const T *tau, const T *s0, int64_t delta_shared, const int64_t *delta,
              double dt_, int64_t substeps, T *x_out, const T *creep = nullptr) {
    const T dt = T(dt_);
    idm_run<T>(n, v, g, v0, v_lead, accel, tsab, tau, s0, delta_shared, delta, dt_, substeps);
    if (creep)  // kernels.idm_move: from standstill toward a standing point (rule 5)
        for (int64_t i = 0; i < n; ++i) v[i] = (creep[i] > T(0) && v[i] < T(STANDING_EPS)) ? creep[i] : v[i];
    if (v_cap)  // rule 8's cap (turning speeds); without them the loop stays as lean as before
        for (int64_t i = 0; i < n; ++i) v[i] = minimum(v[i], v_cap[i]);
    for (int64_t i = 0; i < n; ++i) {
        v[i] = minimum(v[i], clamp_min(gap_phys[i], T(0)) / dt);
        x_out[i] = x_in[i] + v[i] * dt;
    }
}

template <typename T> struct Scratch {
    std::vector<T> x_new, v_new, v0, gap, v_lead, gap_phys, v_cap, land, via, best, s0, creep;
    std::vector<uint8_t> stopping;  // per window row: its obstacle is a standing point, not a vehicle (rule 5)
    std::vector<int64_t> next_lane, fronts, first, sorted, new_lane, f_ci, f_code;
    std::vector<uint8_t> f_found, f_must, f_moving, f_sig;  // f_sig: held by its signal (red, or a yellow it stops for)
    std::vector<T> f_d, t_arr, t_leave, arr, leave, leave_in, f_gapj, f_vj, f_vmax, clear, foe_d, foe_v, foe_b;
    std::vector<T> f_vout;  // a front vehicle's speed leaving the junction (kernels.yield_blocked)
    std::vector<int64_t> zone_occ;  // per connection: the parts of its path its standing vehicles inside cover
    std::vector<uint8_t> waiting, blocked_in;  // kernels.waiting_inside; held at the internal junction
    std::vector<uint8_t> quiet;  // waiting there, it requests no later link (kernels.yield_blocked: aborted)
    std::vector<int64_t> held;  // the followers whose link shows red or yellow (held_red: red)
    std::vector<uint8_t> held_red;
    std::vector<int64_t> entry;  // kernels.entry_tails
    std::vector<uint8_t> arrive, leaving, crossed;
    std::vector<int64_t> open, tries;  // open: per edge, the lanes refused this step (insertion)
    std::vector<double> sums, standing, behind, lane_occ, tail_pos, room;
    std::vector<uint8_t> tail_waits;
    std::vector<int64_t> v_sum, v_n;  // per lane: its vehicles' speeds (kernels.speed_units) summed, their number
    std::vector<int64_t> lane_start, target, new_lead, req_foll, swap_with, low, lane_new, behind_of;
    std::vector<int64_t> rank;
    std::vector<uint8_t> touched, swap;
    std::vector<std::vector<int64_t>> members;
    std::vector<T> score, grp_best, near, pos_new, occ, kr, las;
    // IDM toward a standing obstacle, queued per vehicle and run as one vectorized batch before the move
    std::vector<int64_t> ob_row, ob_delta;
    std::vector<int64_t> run;  // the running vehicles after insertion, in slot order
    std::vector<int64_t> lane_link;  // per lane and connection slot: the connection's link (-2: no connection)
    bool any_wait = false;  // a connection waits at an internal junction (none on many networks: no pass looks)
    std::vector<T> ob_v, ob_v0, ob_g, ob_s0, ob_acc, ob_tsab, ob_tau, ob_zero;
};

// kernels.anticipated_speed: the speed reachable next step behind a leader `gap` m ahead (net of min gap)
template <typename T> inline T anticipated_speed(T v, T v0, T gap, T v_lead, T accel, T decel, T tau, double dt_) {
    const T v_safe = safe_stop_speed<T>(gap + brake_gap<T>(v_lead, decel, T(0), dt_), decel, tau, dt_);
    return minimum(minimum(v0, v + accel * T(dt_)), v_safe);
}

// kernels.change_lanes (rule 11) for one world, on the state after the move: the same decisions from the same
// numbers. Vehicles of the window sorted by (lane, position, slot) as kernels.lane_order; a neighbour lane's
// leader is its first vehicle at or ahead of the position (torch.searchsorted, left), its follower the one before.
template <typename T> void change_lanes(const Args &a, World<T> &W, Scratch<T> &sc) {
    const int64_t lo = a.lo, hi = a.hi, n = hi - lo, L = a.L, M = a.M;
    const T inf = std::numeric_limits<T>::infinity();
    const T gain_min = T(1.0), politeness = T(0.5);  // kernels.LC_SPEED_GAIN, LC_POLITENESS
    // each lane's vehicles upstream to downstream, from its tail along the leaders (kernels.lane_order's order)
    std::vector<int64_t> &idx = sc.sorted;
    idx.clear();
    sc.lane_start.assign(L + 1, 0);
    for (int64_t l = 0; l < L; ++l) {
        for (int64_t s = W.last[l]; s >= 0; s = W.leader[s]) idx.push_back(s);
        sc.lane_start[l + 1] = int64_t(idx.size());
    }
    sc.target.assign(n, -1); sc.new_lead.assign(n, -1); sc.req_foll.assign(n, -1); sc.swap_with.assign(n, -1);
    sc.behind_of.assign(n, -1);
    sc.score.assign(n, -inf);
    if (W.lc_stop) std::fill(W.lc_stop + lo, W.lc_stop + hi, inf);
    sc.kr.assign(n, T(0));
    if (W.lc_kr) std::copy(W.lc_kr + lo, W.lc_kr + hi, sc.kr.begin());
    sc.las.assign(n, T(0));
    if (W.lc_las) std::copy(W.lc_las + lo, W.lc_las + hi, sc.las.begin());
    // kernels.LC_LOOK_AHEAD_MEMORY: the two weights rounded from double, as torch rounds Python scalars
    const double memory_d = 1.0 - (1.0 - 0.9) * a.dt;
    const T memory = T(memory_d), fresh = T(1.0 - memory_d);
    const T *ahead_m = static_cast<const T *>(a.route_ahead_m), *cont = static_cast<const T *>(a.route_lane_cont);
    // each lane's occupation (lengths plus min gaps), summed in slot order as kernels.change_lanes' index_add_
    sc.occ.assign(L, T(0));
    for (int64_t s = lo; s < hi; ++s)
        if (W.status[s] == RUNNING) sc.occ[W.lane[s]] += W.length[s] + W.min_gap[s];
    for (int64_t s = lo; s < hi; ++s) {
        if (W.status[s] != RUNNING) continue;
        const int64_t i = s - lo, ln = W.lane[s], e = a.lane_edge[ln], k = a.lane_index[ln];
        const int64_t first = a.edge_first_lane[e], n_here = a.edge_n_lanes[e];
        const T x = W.pos[s], v = W.speed[s], len = W.length[s], mg = W.min_gap[s];
        // the front on the lane, out of the junction (kernels.change_lanes)
        if (!(x >= T(0)) || n_here <= 1) continue;
        const int64_t rp = std::min(std::max(W.rpos[s], int64_t(0)), M - 1);
        const int64_t mask = a.route_best_mask[W.route[s] * M + rp];
        const bool cur_ok = ((mask >> k) & 1) == 1;
        int64_t best_j = -1, best_dist = int64_t(1) << 30;
        for (int64_t j = 0; j < a.max_lanes; ++j) {
            const int64_t dist = k > j ? k - j : j - k;
            if (j < n_here && ((mask >> j) & 1) == 1 && dist < best_dist) { best_j = j; best_dist = dist; }
        }
        const int64_t strat = (!cur_ok && best_j >= 0) ? (best_j > k ? 1 : best_j < k ? -1 : 0) : 0;
        const T decel = W.decel[s], tau = W.tau[s], accel = W.accel[s], sf = W.speed_factor[s], vmax = W.max_speed[s];
        const int64_t own = W.leader[s];
        const T g_own = own >= 0 ? W.pos[own] - W.length[own] - x - mg : inf;
        const T v0 = minimum(W.lane_speed[ln] * sf, vmax);
        const T v_cur = anticipated_speed<T>(v, v0, g_own, own >= 0 ? W.speed[own] : T(0), accel, decel, tau, a.dt);
        // the look-ahead speed (SUMO's myLookAheadSpeed), updated once per neighbour lane: right, then left; each
        // direction judged after its own update (kernels.change_lanes)
        auto remember = [&](T la) { return v > la ? v : clamp_min(memory * la + fresh * v, T(0)); };
        const T la_right = k > 0 ? remember(sc.las[i]) : sc.las[i];
        const T la_left = k + 1 < n_here ? remember(la_right) : la_right;
        sc.las[i] = la_left;
        const T la_dir = strat > 0 ? la_left : la_right;
        // urgency of a strategic change (SUMO's currentDistDisallows), and the time left for it
        const T d_end = W.lane_length[ln] - x, n_cross = T(std::max(best_dist, int64_t(1)));
        // (the room left along the lane's continuation on the route, SUMO's LaneQ.length: kernels.change_lanes)
        const T *cont_here = cont + (W.route[s] * M + rp) * a.max_lanes;
        const T ahead_cur = minimum(cont_here[std::min(k, a.max_lanes - 1)] - x, T(1e9));  // kernels.LC_FAR_M
        const T usable = (ahead_cur - sc.occ[first + std::max(best_j, int64_t(0))]) / n_cross;
        const T remaining = maximum(d_end / maximum(la_dir, T(1e-6)) / n_cross / T(2.0), T(a.dt));  // LC_URGENCY
        // an urgent change across more than one lane keeps room ahead (kernels.LC_RESERVE_LEFT_M / _RIGHT_M, _SLACK_M)
        // the look-ahead of an urgent strategic change (kernels.LC_LOOK_FORWARD_S, LC_LOOKAHEAD_LEFT)
        auto look_ahead = [&](T la, bool left) { return la * T(10.0) * (left ? T(2.0) : T(1.0)) + T(2) * (len + mg); };
        const T la_strat = look_ahead(la_dir, strat > 0);
        const T reserve = (strat != 0 && best_dist > 1 && usable < la_strat) ? (strat > 0 ? T(40.0) : T(20.0)) : T(0);
        const T room = d_end - reserve - T(1.0) - mg;
        if (W.lc_stop && reserve > T(0) && room > T(0)) W.lc_stop[s] = x + room;
        // keep right (kernels.change_lanes, SUMO LC2013): the time at the desired speed the right lane offers
        const T kr = sc.kr[i];
        const T accept = T(7.0) * (v0 / W.lane_speed[ln]) * clamp_min(v, T(1.0));  // kernels.LC_KEEP_RIGHT_ACCEPT_S
        const T fsg0 = clamp_min(d_end + ahead_m[W.route[s] * M + rp] - brake_gap<T>(v0, decel, tau, a.dt), T(0));
        const T fsds0 = minimum(accept, fsg0 / v0);
        for (int64_t d = -1; d <= 1; d += 2) {
            const int64_t tk = k + d;
            if (tk < 0 || tk >= n_here) continue;
            const int64_t tl = first + tk;
            const bool tgt_ok = ((mask >> tk) & 1) == 1;
            const bool kr_on = d < 0 && strat == 0 && cur_ok && tgt_ok;  // keep right considered
            // speed gain may leave the best lanes where the way back would not be urgent (kernels.change_lanes,
            // LC_AWAY_LANES): the target's continuation less its own lane's occupation, per lane to cross back plus one
            const T back = look_ahead(d < 0 ? la_right : la_left, d < 0);
            const bool calm = (cont_here[std::min(tk, a.max_lanes - 1)] - x - sc.occ[ln]) / T(2.0) >= back;
            if (strat != d && !kr_on) {  // only a speed gain could move it: skip where none can (the same decisions)
                if (strat != 0 || !cur_ok || (!tgt_ok && !calm)) continue;
                const T bound = minimum(minimum(W.lane_speed[tl] * sf, vmax), v + accel * T(a.dt));
                if (!(bound - v_cur > gain_min)) continue;
            }
            const int64_t *b0 = idx.data() + sc.lane_start[tl], *b1 = idx.data() + sc.lane_start[tl + 1];
            const int64_t *it = std::lower_bound(b0, b1, x, [&W](int64_t q, T xx) { return W.pos[q] < xx; });
            const int64_t lead = it < b1 ? *it : -1, foll = it > b0 ? *(it - 1) : -1;
            const T g_l = lead >= 0 ? W.pos[lead] - W.length[lead] - x - mg : inf;
            const T v_l = lead >= 0 ? W.speed[lead] : T(0);
            const T need_l = secure_gap<T>(v, v_l, decel, tau, a.dt);
            T g_f = inf, need_f = T(0), loss = T(0);
            if (foll >= 0) {
                const T v_f = W.speed[foll], dec_f = W.decel[foll], tau_f = W.tau[foll];
                g_f = x - len - W.pos[foll] - W.min_gap[foll];
                need_f = secure_gap<T>(v_f, v, dec_f, tau_f, a.dt);
                const T v0_f = minimum(W.lane_speed[tl] * W.speed_factor[foll], W.max_speed[foll]);
                const T g_fl = lead >= 0 ? W.pos[lead] - W.length[lead] - W.pos[foll] - W.min_gap[foll] : inf;
                loss = clamp_min(anticipated_speed<T>(v_f, v0_f, g_fl, v_l, W.accel[foll], dec_f, tau_f, a.dt)
                                 - anticipated_speed<T>(v_f, v0_f, g_f, v, W.accel[foll], dec_f, tau_f, a.dt), T(0));
            }
            const bool safe = g_l >= need_l && g_f >= need_f;
            const T v_tgt = anticipated_speed<T>(v, minimum(W.lane_speed[tl] * sf, vmax), g_l, v_l, accel, decel, tau,
                                                 a.dt);
            const T gain = v_tgt - v_cur - politeness * loss;
            // (a strategic change that is not urgent waits until the target lane is not slower)
            const bool wants_strat = strat == d && (usable < la_strat || gain >= T(0));
            const bool wants_gain = strat == 0 && cur_ok && (tgt_ok || calm) && gain > gain_min;
            bool wants_kr = false;
            if (kr_on) {  // kernels.LC_KEEP_RIGHT_*: the sum falls while the right lane is not much slower
                const bool slower = lead >= 0 && v_l < v0;
                const T fsg = clamp_min(minimum(fsg0, g_l - secure_gap<T>(v0, v_l, decel, tau, a.dt)), T(0));
                const T fsds = slower ? minimum(fsds0, fsg / clamp_min(v0 - v_l, T(NUMERICAL_EPS))) : fsds0;
                T kr_new = kr;
                if (!(v_cur - T(5.0 / 3.6) > v_tgt)) kr_new = kr - T(a.dt) * (T(2.0) * (fsds / accept) / T(5.0));
                sc.kr[i] = kr_new;
                wants_kr = kr_new < -T(2.0);
            }
            const T sc_ = wants_strat ? inf : wants_kr ? T(1e9) : gain;  // kernels.LC_KEEP_RIGHT_SCORE
            if ((wants_strat || wants_gain || wants_kr) && safe && sc_ > sc.score[i]) {
                sc.target[i] = tl; sc.new_lead[i] = lead; sc.score[i] = sc_;
            }
            if (wants_strat && !safe && foll >= 0 && g_f > T(0)) sc.req_foll[i] = foll;
            // falling behind the target lane's leader it cannot overtake before its lane ends (kernels.change_lanes)
            if (wants_strat && lead >= 0 && g_l < need_l) {
                const T dv = v - v_l, dec_l = W.decel[lead];
                const T overtake = clamp_min(g_l + W.length[lead] + W.min_gap[lead] + len
                                             + secure_gap<T>(v_l, v, dec_l, W.tau[lead], a.dt), T(0));
                const bool cannot = dv <= T(0) || d_end - reserve - brake_gap<T>(v, decel, tau, a.dt) < overtake
                                    || remaining * dv < overtake;
                if (usable < la_strat && cannot) sc.behind_of[i] = lead;  // urgent (d is its direction)
            }
            if (wants_strat && !safe) {
                const int64_t blocker = g_l < need_l ? lead : g_f < need_f ? foll : -1;
                sc.swap_with[i] = blocker;
            }
        }
    }
    // one vehicle per gap (the same new leader, or both the front of the lane): the furthest ahead, then the lowest slot
    sc.grp_best.assign(n + L, -inf);
    sc.low.assign(n + L, std::numeric_limits<int64_t>::max());
    auto group = [&](int64_t i) { return sc.new_lead[i] >= 0 ? sc.new_lead[i] - lo : n + sc.target[i]; };
    for (int64_t i = 0; i < n; ++i)
        if (sc.target[i] >= 0) { T &b = sc.grp_best[group(i)]; if (W.pos[lo + i] > b) b = W.pos[lo + i]; }
    for (int64_t i = 0; i < n; ++i)
        if (sc.target[i] >= 0 && W.pos[lo + i] == sc.grp_best[group(i)]) {
            int64_t &m = sc.low[group(i)];
            m = std::min(m, lo + i);
        }
    // swaps of two vehicles that block each other's strategic change, where each body fits the place it takes (not
    // longer than the one it replaces, or its rear clear of the vehicle behind that place); a change into the gap
    // behind a swapping vehicle is given up where the longer body taking that place would reach back over it
    sc.rank.resize(n);
    for (int64_t l = 0; l < L; ++l)
        for (int64_t j = sc.lane_start[l]; j < sc.lane_start[l + 1]; ++j) sc.rank[idx[j] - lo] = j;
    auto behind = [&](int64_t s) {  // the vehicle behind s on its lane (before the changes), -1: none
        const int64_t j = sc.rank[s - lo];
        return j > sc.lane_start[W.lane[s]] ? idx[j - 1] : int64_t(-1);
    };
    auto fits = [&](int64_t s) {
        const int64_t p = sc.swap_with[s - lo], bh = behind(p);
        return W.length[s] <= W.length[p] || bh < 0 || W.pos[p] - W.length[s] >= W.pos[bh];
    };
    sc.swap.assign(n, 0);
    for (int64_t i = 0; i < n; ++i) {
        const int64_t s = lo + i, p = sc.swap_with[i];
        sc.swap[i] = p >= 0 && sc.swap_with[p - lo] == s && fits(s) && fits(p);
    }
    sc.lane_new.resize(n); sc.pos_new.resize(n);
    for (int64_t i = 0; i < n; ++i) {
        const int64_t s = lo + i, p = sc.swap_with[i], nl = sc.new_lead[i];
        sc.lane_new[i] = W.lane[s]; sc.pos_new[i] = W.pos[s];
        if (sc.swap[i]) { sc.lane_new[i] = W.lane[p]; sc.pos_new[i] = W.pos[p]; continue; }
        if (sc.target[i] < 0 || sc.low[group(i)] != s) continue;
        if (nl >= 0 && sc.swap[nl - lo] && W.pos[nl] - W.length[sc.swap_with[nl - lo]] < W.pos[s]) continue;
        sc.lane_new[i] = sc.target[i];
    }
    // the keep-right sum starts again after any change (kernels.change_lanes)
    if (W.lc_kr)
        for (int64_t i = 0; i < n; ++i) W.lc_kr[lo + i] = sc.lane_new[i] != W.lane[lo + i] ? T(0) : sc.kr[i];
    if (W.lc_las)  // and the look-ahead speed
        for (int64_t i = 0; i < n; ++i) W.lc_las[lo + i] = sc.lane_new[i] != W.lane[lo + i] ? T(0) : sc.las[i];
    // one request per follower: the nearest requester after the swaps (lowest position, then the lowest slot)
    sc.near.assign(n, inf);
    for (int64_t i = 0; i < n; ++i)
        if (sc.req_foll[i] >= 0) { T &b = sc.near[sc.req_foll[i] - lo]; if (sc.pos_new[i] < b) b = sc.pos_new[i]; }
    for (int64_t s = lo; s < hi; ++s) W.lc_yield[s] = -1;
    for (int64_t i = 0; i < n; ++i) {
        const int64_t f = sc.req_foll[i];
        if (f >= 0 && sc.pos_new[i] == sc.near[f - lo] && (W.lc_yield[f] < 0 || lo + i < W.lc_yield[f]))
            W.lc_yield[f] = lo + i;
    }
    // one not asked to let anyone in follows the target lane's leader it falls behind (unless it swapped)
    for (int64_t i = 0; i < n; ++i)
        if (W.lc_yield[lo + i] < 0 && !sc.swap[i]) W.lc_yield[lo + i] = sc.behind_of[i];
    // the order on the lanes a vehicle left or entered: sorted again by (position, slot), as kernels.lane_order
    sc.touched.assign(L, 0);
    bool any = false;
    for (int64_t i = 0; i < n; ++i)
        if (sc.lane_new[i] != W.lane[lo + i] || sc.pos_new[i] != W.pos[lo + i]) {
            sc.touched[W.lane[lo + i]] = sc.touched[sc.lane_new[i]] = 1;
            any = true;
        }
    for (int64_t i = 0; i < n; ++i) { W.lane[lo + i] = sc.lane_new[i]; W.pos[lo + i] = sc.pos_new[i]; }
    if (!any) return;
    std::vector<std::vector<int64_t>> &members = sc.members;
    members.resize(L);
    for (int64_t l = 0; l < L; ++l)
        if (sc.touched[l]) members[l].clear();
    for (int64_t s = lo; s < hi; ++s)
        if (W.status[s] == RUNNING && sc.touched[W.lane[s]]) members[W.lane[s]].push_back(s);
    for (int64_t l = 0; l < L; ++l) {
        if (!sc.touched[l]) continue;
        std::vector<int64_t> &m = members[l];
        std::sort(m.begin(), m.end(), [&W](int64_t p, int64_t q) {
            return W.pos[p] != W.pos[q] ? W.pos[p] < W.pos[q] : p < q;
        });
        W.last[l] = m.empty() ? -1 : m[0];
        for (size_t j = 0; j < m.size(); ++j) W.leader[m[j]] = j + 1 < m.size() ? m[j + 1] : -1;
    }
}

template <typename T> void step_world(const Args &a, int64_t w, Scratch<T> &sc) {
    World<T> W(a, w);
    const T inf = std::numeric_limits<T>::infinity();
    const T dt = T(a.dt), stop_speed = T(0.1);
    const double inf64 = std::numeric_limits<double>::infinity();
    const int64_t lo = a.lo, hi = a.hi, n = hi - lo, L = a.L, M = a.M, J = a.J;

    // 2. leaders and tails: carried over, or sorted out
    if (a.need_sort) W.sort_lanes(sc.sorted);

    // 3. insertion: per first edge the due vehicles try in slot (departure) order, at most
    // insert_rounds of them; one that does not fit closes the lanes it could take for this step
    // (sc.open: per edge, the bitmask of lanes refused)
    sc.open.assign(a.E, 0);
    sc.tries.assign(a.E, 0);
    // kernels.lane_speed_sums (integers: any order gives the same sums), made for the first vehicle inserted at the
    // lane's mean speed
    auto units = [](T v) { return int64_t(std::floor(double(v) * SPEED_SUM_SCALE)); };  // kernels.speed_units
    bool have_sums = false;
    for (int64_t s = lo; s < hi; ++s) {
        if (W.status[s] != WAITING || !(W.depart[s] <= a.t + 1e-9) || W.route[s] < 0) continue;
        // route_pos: 0, or the edge a teleport chose (kernels rule 12)
        const int64_t r = W.route[s], rp0 = W.rpos[s], e = a.route_edges[r * M + rp0];
        if (e < 0) continue;  // route_tables refuses empty routes; never index with -1
        const int64_t free = (a.lane_change ? a.route_best_mask : a.route_mask)[r * M + rp0] & ~sc.open[e];
        if (free == 0 || sc.tries[e] >= a.insert_rounds) continue;
        ++sc.tries[e];
        T room;
        const int64_t il = W.choose_lane(e, free, room);
        const T len = W.length[s], mg = W.min_gap[s];
        if (!(il >= 0 && room - len >= mg)) { sc.open[e] |= free; continue; }
        const T v0 = minimum(W.lane_speed[il] * W.speed_factor[s], W.max_speed[s]);
        const T gap = room - len;
        T v = std::isfinite(gap) ? clamp_min((gap - mg) / W.tau[s], T(0)) : inf;
        T v_dep = W.depart_speed[s];
        if (v_dep < T(0)) {  // kernels.DEPART_AVG: the lane's mean speed, its limit when empty
            if (!have_sums) {
                sc.v_sum.assign(L, 0);
                sc.v_n.assign(L, 0);
                for (int64_t q = lo; q < hi; ++q)
                    if (W.status[q] == RUNNING) { sc.v_sum[W.lane[q]] += units(W.speed[q]); ++sc.v_n[W.lane[q]]; }
                have_sums = true;
            }
            const int64_t n_on = sc.v_n[il];
            v_dep = minimum(v0, n_on > 0 ? T(double(sc.v_sum[il]) / SPEED_SUM_SCALE / double(n_on)) : W.lane_speed[il]);
            if (n_on > 0 && v < v_dep) { sc.open[e] |= free; continue; }  // not patched on an occupied lane: it waits
        }
        v = minimum(minimum(v, v0), v_dep);
        if (have_sums) { sc.v_sum[il] += units(v); ++sc.v_n[il]; }
        W.status[s] = RUNNING; W.lane[s] = il; W.pos[s] = len; W.speed[s] = v;
        if (W.insert_step[s] < 0) W.insert_step[s] = a.step_index;
        W.leader[s] = W.last[il]; W.last[il] = s;
    }

    // the running vehicles, in slot order: the passes below visit only these (the window also holds vehicles
    // still to depart and arrived ones); listed without a branch, as statuses mix in the window
    sc.run.resize(n);
    int64_t n_run = 0;
    for (int64_t s = lo; s < hi; ++s) {
        sc.run[n_run] = s;
        n_run += W.status[s] == RUNNING;
    }
    sc.run.resize(n_run);
    const bool any_wait = sc.any_wait;

    // each lane's space till its last standing vehicle (kernels.space_till_standing): the back of its
    // upstream-most halted vehicle (+inf: none), less the length + min gap of the vehicles behind it (slot order)
    // (kernels.waiting_inside: vehicles waiting at an internal junction are on their own path through the
    // junction, neither counted there nor in the way of vehicles entering their lane by another path)
    sc.waiting.assign(n, 0);
    if (any_wait)
        for (const int64_t s : sc.run) {
            const int64_t c = W.conn[s];
            if (!(W.pos[s] < T(0)) || W.rpos[s] <= 0 || c < 0 || !(W.conn_wait[c] > T(0))) continue;
            sc.waiting[s - lo] = W.conn_wait[c] - W.conn_via[c] - W.pos[s] > T(-1e-3);  // kernels.WAIT_SLACK_M
        }
    auto is_waiting = [&](int64_t s) { return s >= lo && s < hi && sc.waiting[s - lo]; };
    // 10. SUMO's same-source foes (kernels.same_source): vehicle s, se m along connection ce's path past the line,
    // follows one that left its lane by another connection until that one's back has passed where the paths part
    auto same_source = [&](int64_t s, int64_t ce, T se, T &gap, T &v_lead) {
        for (int64_t j = 0; j < J; ++j) {
            const int64_t cf = a.conn_sib[ce * J + j];
            if (cf < 0) break;
            const T de = W.conn_div[ce * J + j], df = W.conn_div_foe[ce * J + j];
            if (!(se < de)) continue;
            const int64_t e = a.conn_to_edge[cf], first = a.edge_first_lane[e];
            for (int64_t k = 0; k < a.edge_n_lanes[e]; ++k) {
                int64_t t = W.last[first + k];
                for (int hop = 0; hop < 2 && t >= 0 && W.conn[t] != cf; ++hop) t = W.leader[t];
                if (t < 0 || t == s || W.conn[t] != cf) continue;
                const T back = W.conn_via[cf] + W.pos[t] - W.length[t];
                if (!(back < df) || !(back + W.length[t] > se)) continue;
                const T g = (de - se) - W.min_gap[s] - (df - back);
                if (g < gap) { gap = g; v_lead = W.speed[t]; }
            }
        }
    };
    // kernels.next_connection: the connection out of lane ln into next_edge (-1: none)
    auto next_conn = [&](int64_t ln, int64_t next_edge) {
        int64_t ci = -1;
        for (int64_t j = 0; j < J; ++j)
            ci = where(a.lane_conn_edge[ln * J + j] == next_edge, a.lane_conn[ln * J + j], ci);
        return ci;
    };
    // IDM toward a standing obstacle `gap` m ahead (min gap s0) from vehicle s (window row i) at desired speed v0,
    // capping sc.v_cap[i]: queued, and run for all of them at once before the move (one loop that vectorizes; the
    // same operations as kernels.idm_speed per vehicle)
    sc.ob_row.clear(); sc.ob_v0.clear(); sc.ob_g.clear(); sc.ob_s0.clear();
    auto queue_obstacle = [&](int64_t i, T v0, T gap, T s0) {
        sc.ob_row.push_back(i); sc.ob_v0.push_back(v0); sc.ob_g.push_back(gap); sc.ob_s0.push_back(s0);
    };
    // vehicle s (window row i) brakes for its stop line d m ahead (kernels.advance): IDM toward a standing obstacle
    // there, or Krauss's safe stop speed
    auto cap_at_line = [&](int64_t s, int64_t i, T d) {
        if (a.cf == KRAUSS) sc.v_cap[i] = minimum(sc.v_cap[i], safe_stop_speed<T>(d, W.decel[s], W.tau[s], a.dt));
        else queue_obstacle(i, sc.v0[i], d, T(0));  // (a standing point: no min gap, kernels rule 5)
    };
    sc.standing.assign(L, inf64); sc.behind.assign(L, 0.0);
    // (selects by index, not branches: whether a vehicle stands, or is behind one, is a coin flip in queues)
    for (const int64_t s : sc.run) {
        const int counts = int(!sc.waiting[s - lo]) & int(W.speed[s] < stop_speed);
        double &st = sc.standing[W.lane[s]];
        const double pick[2] = {inf64, double(W.pos[s]) - double(W.length[s])}, c = pick[counts];
        st = c < st ? c : st;  // (std::min returns a reference, compiled to a branch)
    }
    for (const int64_t s : sc.run) {
        const int counts = int(!sc.waiting[s - lo]) & int(double(W.pos[s]) <= sc.standing[W.lane[s]]);
        const double pick[2] = {0.0, double(W.length[s] + W.min_gap[s])};
        sc.behind[W.lane[s]] += pick[counts];
    }
    // a lane with nothing standing counts as stopped while its last vehicle has to wait at its next link (SUMO's
    // myHaveToWaitOnNextLink in checkRewindLinkLanes, read from the state now): its link shows red, or yellow it
    // stops for, or it follows a vehicle on the lane and is slower than its decel (SUMO's heuristic: its passing
    // speed is its leader's to follow, no more than its speed to stop at the line). Its room is then its length
    // less every vehicle on it (kernels.space_till_standing)
    auto held_by_signal = [&](int64_t s) {
        const int64_t r = W.route[s], rp = W.rpos[s], ln = W.lane[s];
        if (!(a.has_conn && a.G > 0) || rp + 1 >= a.route_len[r]) return false;
        const int64_t ci = next_conn(ln, a.route_edges[r * M + std::min(rp + 1, M - 1)]);
        const int64_t code = ci < 0 ? int64_t(SIG_GREEN) : W.link_code(a.conn_link[ci]);
        return code == SIG_RED ||
               (code == SIG_YELLOW && stops_at_yellow<T>(W.speed[s], W.decel[s], W.lane_length[ln] - W.pos[s], a.dt));
    };
    sc.lane_occ.assign(L, 0.0); sc.tail_pos.assign(L, inf64); sc.tail_waits.assign(L, 0);
    for (const int64_t s : sc.run) {
        if (sc.waiting[s - lo] || !(W.pos[s] > T(0))) continue;
        const int64_t ln = W.lane[s];
        const double p = double(W.pos[s]);
        sc.lane_occ[ln] += double(W.length[s] + W.min_gap[s]);
        if (p > sc.tail_pos[ln]) continue;
        const uint8_t waits = (W.leader[s] >= 0 && W.speed[s] < W.decel[s]) || held_by_signal(s);
        if (p < sc.tail_pos[ln]) { sc.tail_pos[ln] = p; sc.tail_waits[ln] = waits; }
        else sc.tail_waits[ln] |= waits;
    }
    sc.room.resize(L);
    for (int64_t l = 0; l < L; ++l)
        sc.room[l] = std::isfinite(sc.standing[l]) ? sc.standing[l] - sc.behind[l]
                       : sc.tail_waits[l] ? double(W.lane_length[l]) - sc.lane_occ[l] : inf64;
    // kernels.room_beyond: past a next lane `nl` where nothing stops, SUMO's checkRewindLinkLanes carries the space
    // over the link out of it: that lane's length less its vehicles, plus the room of the lane after it (the most of
    // the lanes its connection leads to) where that is limited, or that lane's alone where the link shows red or
    // yellow (a stop ahead); +inf otherwise
    auto room_beyond = [&](int64_t r, int64_t rp, int64_t nl) {
        if (nl < 0 || rp + 2 >= a.route_len[r]) return inf64;
        const int64_t e2 = a.route_edges[r * M + std::min(rp + 2, M - 1)];
        const int64_t c2 = next_conn(nl, e2);
        if (c2 < 0) return inf64;
        const int64_t code = W.link_code(a.conn_link[c2]);
        const double own = double(W.lane_length[nl]) - sc.lane_occ[nl];
        if (code == SIG_RED || code == SIG_YELLOW) return own;
        double after = -inf64;
        const int64_t mask = a.conn_to_mask[c2], first = a.edge_first_lane[e2];
        for (int64_t k = 0; k < a.edge_n_lanes[e2]; ++k)
            if ((mask >> k) & 1) after = std::max(after, sc.room[first + k]);
        return std::isfinite(after) ? own + after : inf64;
    };
    sc.entry.assign(W.last, W.last + L);  // kernels.entry_tails (two hops)
    for (int64_t l = 0; l < L; ++l)
        for (int hop = 0; hop < 2; ++hop)
            if (sc.entry[l] >= 0 && is_waiting(sc.entry[l])) sc.entry[l] = W.leader[sc.entry[l]];

    // 4. every running vehicle sees its leader; front vehicles look past the stop line. Vehicles that are
    // not running get a free road (their numbers below are computed and thrown away)
    sc.gap.assign(n, inf); sc.v_lead.assign(n, T(0)); sc.gap_phys.assign(n, inf); sc.v0.assign(n, T(1));
    sc.stopping.assign(n, 0);
    if (a.has_turn || a.cf == KRAUSS || a.has_conn) sc.v_cap.assign(n, inf);
    sc.x_new.resize(n); sc.v_new.resize(n); sc.arrive.assign(n, 0);
    sc.fronts.clear(); sc.next_lane.clear(); sc.via.clear();
    sc.f_ci.clear(); sc.f_found.clear(); sc.f_must.clear(); sc.f_code.clear(); sc.f_d.clear(); sc.f_moving.clear(); sc.f_sig.clear();
    sc.f_gapj.clear(); sc.f_vj.clear(); sc.blocked_in.assign(n, 0); sc.quiet.assign(n, 0);
    size_t n_held = 0;  // the followers whose link shows red or yellow, listed without a branch
    sc.held.resize(sc.run.size()); sc.held_red.resize(sc.run.size());
    for (const int64_t s : sc.run) {
        const int64_t i = s - lo, r = W.route[s], rp = W.rpos[s], ln = W.lane[s];
        int64_t ld = W.leader[s];
        // 10. inside a junction, one waiting at its internal junction on another path is not in the way
        // (kernels.past_waiting, two hops)
        if (W.pos[s] < T(0) && rp > 0)
            for (int hop = 0; hop < 2; ++hop)
                if (ld >= 0 && is_waiting(ld) && W.conn[ld] != W.conn[s]) ld = W.leader[ld];
        const bool on_last_edge = rp + 1 >= a.route_len[r];
        uint8_t follows = 0;  // a follower (below) not on its last edge: its signal may hold it at the line
        // (inside a junction: the vehicles that left its lane before it on other paths, until those part)
        T gap_src = inf, v_src = T(0);
        if (a.has_conn && W.pos[s] < T(0) && rp > 0 && W.conn[s] >= 0)
            same_source(s, W.conn[s], W.conn_via[W.conn[s]] + W.pos[s], gap_src, v_src);
        sc.arrive[i] = on_last_edge;  // for now; arriving also needs the end of the lane passed (below)
        sc.v0[i] = minimum(W.lane_speed[ln] * W.speed_factor[s], W.max_speed[s]);
        const T x = W.pos[s];
        if (a.has_turn) {  // 8. turning speeds: inside the junction just crossed, then anticipating the next
            if (x < T(0) && rp > 0) sc.v0[i] = minimum(sc.v0[i], W.turn[r * M + rp - 1] * W.speed_factor[s]);
            const T u = W.turn[r * M + rp];
            const T ut = minimum(u * W.speed_factor[s], W.max_speed[s]);
            if (std::isfinite(u) && a.cf == KRAUSS)  // SUMO's generic freeSpeed
                sc.v_cap[i] = free_speed<T>(W.lane_length[ln] - x, ut, W.decel[s], a.dt);
            else if (std::isfinite(u)) {  // kernels.turn_speed_cap (SUMO's MSCFModel_IDM::freeSpeed): faster than
                // u, IDM toward a standing obstacle at the crossing or its brake gap for u; within that gap, u
                const T d = W.lane_length[ln] - x, g = brake_gap<T>(ut, W.decel[s], W.tau[s], a.dt);
                if (W.speed[s] > ut) queue_obstacle(i, sc.v0[i], maximum(d, g), T(0));
                if (d < g) sc.v_cap[i] = minimum(sc.v_cap[i], ut);
            }
        }
        if (ld >= 0 || (on_last_edge && gap_src < inf)) {
            sc.gap[i] = sc.gap_phys[i] = ld >= 0 ? W.pos[ld] - W.length[ld] - x : inf;
            sc.v_lead[i] = ld >= 0 ? W.speed[ld] : T(0);
            if (gap_src < sc.gap[i]) { sc.gap[i] = sc.gap_phys[i] = gap_src; sc.v_lead[i] = v_src; }
            follows = !on_last_edge;
        } else if (!on_last_edge) {
            const T v = W.speed[s], len = W.length[s], mg = W.min_gap[s], L_here = W.lane_length[ln];
            const int64_t nk = rp + 1, at = r * M + std::min(nk, M - 1), next_edge = a.route_edges[at];
            T next_room;
            int64_t ci = -1;
            T via = T(0);
            int64_t link = -1;
            bool found = false;
            if (a.has_conn) {
                ci = next_conn(ln, next_edge);
                found = ci >= 0 && next_edge >= 0;
                const int64_t cic = ci < 0 ? 0 : ci;
                via = W.conn_via[cic];
                link = a.conn_link[cic];
            }
            // the lanes it may enter: with lane changing those its connection leads to (the best ones if it can)
            int64_t to_mask = a.route_mask[at];
            if (a.lane_change && a.has_conn) {
                to_mask = a.conn_to_mask[ci < 0 ? 0 : ci];
                const int64_t best_next = to_mask & a.route_best_mask[at];
                if (best_next != 0) to_mask = best_next;
            }
            int64_t nl = W.choose_lane(next_edge, to_mask, next_room, sc.entry.data());
            if (!found) nl = -1;
            const int64_t code = W.link_code(link);
            const T d = L_here - x;
            const bool sig_stop = code == SIG_RED || (code == SIG_YELLOW && stops_at_yellow<T>(v, W.decel[s], d, a.dt));
            bool must_stop = sig_stop || nl < 0 || !found;
            // the nearest vehicle past the line on its way: the tail of the lane it enters (one waiting inside on
            // its own connection is on its path), or one still inside the junction
            int64_t tail = sc.entry[nl < 0 ? 0 : nl];
            const int64_t raw = W.last[nl < 0 ? 0 : nl];
            if (raw >= 0 && raw != tail && W.conn[raw] == ci) {
                tail = raw;
                next_room = W.pos[raw] - W.length[raw];
            }
            T v_junction = tail >= 0 ? W.speed[tail] : T(0);
            T gap_junction = std::isfinite(next_room) ? d + via + next_room : inf;
            if (gap_src < gap_junction) { gap_junction = gap_src; v_junction = v_src; }
            if (found) same_source(s, ci, -d, gap_junction, v_junction);
            if (!a.lane_change && a.has_conn && found && nl >= 0) {
                // without lane changing it crosses behind the vehicle ahead on its connection still inside the
                // junction, whichever lane of the next edge that one entered (kernels.advance)
                const int64_t e = a.lane_edge[nl], first = a.edge_first_lane[e];
                for (int64_t j = 0; j < a.edge_n_lanes[e]; ++j) {
                    const int64_t t = W.last[first + j];
                    if (t < 0 || !(W.pos[t] < T(0)) || W.conn[t] != ci) continue;
                    const T g = d + via + (W.pos[t] - W.length[t]);
                    if (g < gap_junction) { gap_junction = g; v_junction = W.speed[t]; }
                }
            }
            // keep the junction clear (where the connection must, net.conn_keep_clear): no room on the next lane
            // (behind its last standing vehicle, or past every vehicle while its last one is slow) holds this one
            const int64_t nlc = nl < 0 ? 0 : nl;
            const bool keep_clear = a.has_conn && a.conn_keep_clear[ci < 0 ? 0 : ci];
            // where nothing stops on it, the room one lane further on (kernels.room_beyond), while it can still brake
            // for its line (kernels.POSITION_EPS_M past its brake gap)
            const bool can_brake = d >= brake_gap<T>(v, W.decel[s], T(0), a.dt) + T(0.1);
            const double room_next = std::isfinite(sc.room[nlc]) || !keep_clear || !can_brake ? sc.room[nlc]
                                     : room_beyond(r, rp, nl);
            must_stop = must_stop || (room_next < double(len + mg) && keep_clear);
            sc.fronts.push_back(s); sc.next_lane.push_back(nl); sc.via.push_back(via);
            sc.f_ci.push_back(ci); sc.f_found.push_back(found); sc.f_must.push_back(must_stop);
            sc.f_code.push_back(code); sc.f_d.push_back(d); sc.f_sig.push_back(sig_stop);
            sc.f_gapj.push_back(gap_junction); sc.f_vj.push_back(v_junction);
            // (SUMO's willPass: a front that cannot move on, its way blocked past the line, announces no window)
            sc.f_moving.push_back(gap_junction > mg + T(0.1) || v >= stop_speed);  // kernels.MOVE_SLACK_M
        }
        if (a.has_conn && a.G > 0) {  // (selects, not branches: red or green is a coin flip in slot order, and a
            // mispredicted branch serialized the loads route -> link -> signal)
            const int64_t next_edge = a.route_edges[r * M + std::min(rp + 1, M - 1)];
            int64_t link = -2;  // (as next_conn: the last of the lane's connections into the next edge)
            for (int64_t j = 0; j < J; ++j)
                link = where(a.lane_conn_edge[ln * J + j] == next_edge, sc.lane_link[ln * J + j], link);
            const int64_t code = W.link_code(link);  // (no connection, no signal: green)
            sc.held[n_held] = s; sc.held_red[n_held] = code == SIG_RED;
            n_held += follows & uint8_t(code == SIG_RED || code == SIG_YELLOW);
        }
    }
    // 4. a follower whose link is red, or yellow while it can still stop, brakes for the line as well
    // (kernels.advance): listed in the loop above, capped here
    for (size_t k = 0; k < n_held; ++k) {
        const int64_t s = sc.held[k];
        const T d_line = W.lane_length[W.lane[s]] - W.pos[s];
        if (sc.held_red[k] || stops_at_yellow<T>(W.speed[s], W.decel[s], d_line, a.dt))
            cap_at_line(s, s - lo, stop_line<T>(W.speed[s], d_line, W.decel[s], a.dt));
    }
    const size_t F = sc.fronts.size();
    // 10. right of way (kernels.yield_blocked): every front vehicle that will pass announces its window, so does every
    // vehicle still inside a junction; a minor link whose foes' windows overlap its own waits at the line
    if (a.has_foes) {
        const int64_t C = a.C, NF = a.NF;
        sc.arr.assign(C, inf); sc.leave.assign(C, -inf);
        sc.leave_in.assign(C, -inf);
        sc.zone_occ.assign(C, 0);
        sc.clear.assign(C * ZONE_BINS, -inf);  // kernels.clear_times
        // kernels.body_zone: the parts of its path (ZONE_BINS) a vehicle inside the junction covers
        auto body_zone = [&](int64_t s) -> int64_t {
            const int64_t c = W.conn[s];
            const T size = W.conn_via[c] / T(ZONE_BINS);
            const T front = W.conn_via[c] + W.pos[s], back = front - W.length[s];
            const int64_t lo_b = std::min<int64_t>(ZONE_BINS - 1, std::max<int64_t>(0, int64_t(std::floor(back / size))));
            const int64_t hi_b = std::min<int64_t>(ZONE_BINS - 1, std::max<int64_t>(0, int64_t(std::floor(front / size))));
            return ((int64_t(1) << (hi_b + 1)) - 1) & ~((int64_t(1) << lo_b) - 1);
        };
        for (const int64_t s : sc.run) {
            if (!(W.pos[s] < T(0)) || W.rpos[s] <= 0 || W.conn[s] < 0) continue;
            if (sc.waiting[s - lo]) continue;  // short of its internal junction: announces once past
            const int64_t c = W.conn[s];
            if (W.speed[s] < stop_speed) {  // standing: in the way only of the paths its body covers
                sc.zone_occ[c] |= body_zone(s);
                continue;
            }
            const T clear = (W.length[s] - W.pos[s]) / clamp_min(W.speed[s], stop_speed);
            sc.leave_in[c] = std::max(sc.leave_in[c], clear);
            const T back = W.conn_via[c] + W.pos[s] - W.length[s];
            for (int64_t b = 0; b < ZONE_BINS; ++b) {
                const T end = W.conn_via[c] * T(b + 1) / T(ZONE_BINS);
                if (end > back)
                    sc.clear[c * ZONE_BINS + b] = std::max(sc.clear[c * ZONE_BINS + b],
                                                           (end - back) / clamp_min(W.speed[s], stop_speed));
            }
        }
        // when the moving vehicles inside on connection foe have cleared the parts of its path in zone (-inf: done)
        auto cleared_at = [&](int64_t foe, int64_t zone) {
            T cleared = -inf;
            for (int64_t b = 0; b < ZONE_BINS; ++b)
                if ((zone >> b) & 1) cleared = std::max(cleared, sc.clear[foe * ZONE_BINS + b]);
            return cleared;
        };
        // kernels._foes_block: whether a vehicle on minor connection c, in the conflict area from t_arr to t_leave,
        // must wait for a foe
        // (reach: for a vehicle at its line, d m before it, when its front would reach each foe's path; a foe moving
        // inside the junction holds it only until its rear has passed the crossing, if it would reach it before)
        const T *zone_at = static_cast<const T *>(a.conn_zone_at);
        // (v_leave, decel, imp: at the line, its leave speed, deceleration and impatience for merges, kernels.merge_unsafe)
        auto foes_block = [&](int64_t c, T t_arr, T t_leave, bool at_line, T d, T v, T acc, T vmax, T v_leave,
                              T decel, T imp) {
            bool blocked = false;
            for (int64_t j = 0; j < NF; ++j) {
                const int64_t foe = a.conn_foes[c * NF + j];
                if (foe < 0) continue;
                if (a.conn_zipper[c]) {  // the foe arrives first (ties: the lower connection) and is still there
                    const bool first = sc.arr[foe] < t_arr || (sc.arr[foe] == t_arr && foe < c);
                    if (first && sc.leave[foe] >= t_arr) blocked = true;
                } else if (sc.arr[foe] <= t_leave + T(1.0) && sc.leave[foe] >= t_arr) {
                    blocked = true;  // + kernels.JM_TIMEGAP_MINOR, SUMO's jmTimegapMinor
                }
                // a vehicle inside the junction on a foe connection into another edge (into the same one: a leader)
                if (a.conn_to_edge[foe] == a.conn_to_edge[c]) {
                    // ahead of an approaching foe into the same lane: only at a speed the foe could brake for
                    if (at_line && !a.conn_zipper[c] && (a.conn_to_mask[foe] & a.conn_to_mask[c]) != 0
                        && sc.arr[foe] < inf && sc.arr[foe] > t_leave + T(1.0)
                        && merge_unsafe<T>(v_leave, decel, t_arr, imp, sc.foe_d[foe], sc.foe_v[foe], sc.foe_b[foe]))
                        blocked = true;
                    continue;
                }
                const int64_t zone = a.conn_zone[c * NF + j];
                bool moving = sc.leave_in[foe] >= t_arr;
                if (at_line) moving = cleared_at(foe, zone) >= arrival_time<T>(d + zone_at[c * NF + j], v, acc, vmax);
                if (moving || (sc.zone_occ[foe] & zone) != 0) blocked = true;
            }
            return blocked;
        };
        // a link leader (kernels.yield_blocked): a foe inside the junction has yet to pass the crossing with
        // connection c (moving, its rear short of the crossing's end, or standing in the way)
        auto leader_inside = [&](int64_t c) {
            for (int64_t j = 0; j < NF; ++j) {
                const int64_t foe = a.conn_foes[c * NF + j];
                if (foe < 0 || a.conn_to_edge[foe] == a.conn_to_edge[c]) continue;
                const int64_t zone = a.conn_zone[c * NF + j];
                if (cleared_at(foe, zone) >= T(0) || (sc.zone_occ[foe] & zone) != 0) return true;
            }
            return false;
        };
        // a vehicle waiting at its internal junction requests no later link while a foe inside this junction has yet
        // to pass their crossing (SUMO: that link leader takes its planned speed to 0) or while it still slows down
        // for its waiting point from beyond its visibility distance (SUMO's abortRequestAfterMinor)
        // (kernels.yield_blocked)
        if (any_wait)
            for (const int64_t s : sc.run) {
                if (!sc.waiting[s - lo]) continue;
                const int64_t c = W.conn[s];
                const T d_in = W.conn_wait[c] - W.conn_via[c] - W.pos[s];
                const bool far = d_in > W.conn_vis[c] && W.speed[s] * W.speed[s] <= T(2) * W.decel[s] * d_in;
                sc.quiet[s - lo] = far || leader_inside(c);
            }
        sc.t_arr.resize(F); sc.t_leave.resize(F); sc.f_vmax.resize(F); sc.f_vout.resize(F);
        for (size_t f = 0; f < F; ++f) {
            const int64_t s = sc.fronts[f], ln = W.lane[s];
            const T v0 = minimum(W.lane_speed[ln] * W.speed_factor[s], W.max_speed[s]);
            T vmax = v0;
            if (a.has_turn) vmax = minimum(vmax, W.turn[W.route[s] * M + W.rpos[s]] * W.speed_factor[s]);
            sc.t_arr[f] = arrival_time<T>(sc.f_d[f], W.speed[s], W.accel[s], vmax);
            // its speed leaving the junction, at most what following its junction leader from it allows (SUMO's
            // adaptToLeader, adaptLeaveSpeed)
            T v_arr, v_out;
            line_speeds<T>(sc.f_d[f], sc.via[f], W.speed[s], W.accel[s], vmax, v_arr, v_out);
            const T gj = sc.f_gapj[f];
            if (std::isfinite(gj)) {
                T follow;
                if (a.cf == KRAUSS) {
                    follow = krauss_speed<T>(v_out, v0, gj, sc.f_vj[f], W.min_gap[s], W.accel[s], W.decel[s], W.tau[s],
                                             T(0), T(-1), inf, a.dt);
                } else {
                    T v = v_out, g = gj, vl = sc.f_vj[f];
                    const int64_t dl = a.delta_shared >= 0 ? a.delta_shared : W.delta[s];
                    idm_run<T>(1, &v, &g, &v0, &vl, &W.accel[s], &W.tsab[s], &W.tau[s], &W.min_gap[s], a.delta_shared,
                               &dl, a.dt, a.substeps);
                    follow = v;
                }
                v_out = minimum(v_out, follow);
            }
            sc.f_vout[f] = v_out;
            sc.t_leave[f] = leave_time<T>(sc.t_arr[f], v_arr, v_out, sc.via[f], W.length[s]);
            sc.f_vmax[f] = vmax;
            // (one waiting at its internal junction may request no later link: sc.quiet)
            if (sc.f_found[f] && !sc.f_must[f] && sc.f_moving[f] && !sc.quiet[s - lo]) {
                const int64_t c = sc.f_ci[f];
                sc.arr[c] = std::min(sc.arr[c], sc.t_arr[f]);
                sc.leave[c] = std::max(sc.leave[c], sc.t_leave[f]);
            }
        }
        // ... and the vehicle announcing it, for the merges: its distance to the line, speed and deceleration
        sc.foe_d.assign(C, inf); sc.foe_v.assign(C, T(0)); sc.foe_b.assign(C, T(0));
        for (size_t f = 0; f < F; ++f) {
            const int64_t s = sc.fronts[f], c = sc.f_ci[f];
            if (!(sc.f_found[f] && !sc.f_must[f] && sc.f_moving[f] && !sc.quiet[s - lo]) || sc.t_arr[f] != sc.arr[c])
                continue;
            sc.foe_d[c] = std::min(sc.foe_d[c], sc.f_d[f]);
            sc.foe_v[c] = std::max(sc.foe_v[c], W.speed[s]);
            sc.foe_b[c] = std::max(sc.foe_b[c], W.decel[s]);
        }
        for (size_t f = 0; f < F; ++f) {
            const int64_t c = sc.f_ci[f] < 0 ? 0 : sc.f_ci[f];
            // a link into an internal junction (cont="1") is open at the line unless red (SUMO's MSLink::opened)
            if (!sc.f_found[f] || sc.f_must[f] || W.conn_wait[c] > T(0)
                || !(a.conn_yield[c] || sc.f_code[f] == SIG_GREEN_MINOR))
                continue;
            const int64_t s = sc.fronts[f];
            const T stood = W.wait ? T(W.wait[s]) * T(a.dt) : T(0);
            const T imp = std::min(stood / T(TIME_TO_IMPATIENCE_S), T(1));
            if (foes_block(c, sc.t_arr[f], sc.t_leave[f], true, sc.f_d[f], W.speed[s], W.accel[s], sc.f_vmax[f],
                           sc.f_vout[f], W.decel[s], imp))
                sc.f_must[f] = 1;
        }
        // vehicles waiting at their internal junction: a minor link there (SUMO's "m"), timed from that point
        if (any_wait)
            for (const int64_t s : sc.run) {
                if (!sc.waiting[s - lo]) continue;
                const int64_t c = W.conn[s], r = W.route[s], rp = W.rpos[s];
                T vmax = minimum(W.lane_speed[W.lane[s]] * W.speed_factor[s], W.max_speed[s]);
                if (a.has_turn) vmax = minimum(vmax, W.turn[r * M + rp - 1] * W.speed_factor[s]);
                const T d_in = W.conn_wait[c] - W.conn_via[c] - W.pos[s];
                const T t_arr = arrival_time<T>(clamp_min(d_in, T(0)), W.speed[s], W.accel[s], vmax);
                const T t_leave = arrival_time<T>(W.length[s] - W.pos[s], W.speed[s], W.accel[s], vmax);
                sc.blocked_in[s - lo] = foes_block(c, t_arr, t_leave, false, T(0), T(0), T(0), T(0), T(0), T(0), T(0));
            }
    }
    // 4'. the obstacle each front vehicle follows: its stop line, or the tail of the lane it will enter
    for (size_t f = 0; f < F; ++f) {
        const int64_t s = sc.fronts[f], i = s - lo;
        const bool must_stop = sc.f_must[f], found = sc.f_found[f];
        const T d = sc.f_d[f], mg = W.min_gap[s];
        const T v_junction = sc.f_vj[f], gap_junction = sc.f_gapj[f];
        // (held by its signal, it stops short of the line: kernels.stop_line)
        const T d_line = sc.f_sig[f] && found ? stop_line<T>(W.speed[s], d, W.decel[s], a.dt) : d;
        const bool line_first = must_stop && (d_line + mg <= gap_junction || !found);
        T gap_front = line_first ? d_line + mg : gap_junction;
        // 10. the cautious approach to a minor link (kernels.advance): a standing obstacle where it waits
        bool wary = false;
        if (a.has_conn) {
            const int64_t c = sc.f_ci[f] < 0 ? 0 : sc.f_ci[f];
            const bool minor = found && !must_stop && (a.conn_yield[c] || sc.f_code[f] == SIG_GREEN_MINOR);
            const T d_wait = d + W.conn_wait[c], v = W.speed[s];
            wary = minor && d_wait > W.conn_vis[c] && v * v <= T(2.0) * W.decel[s] * d_wait && d_wait + mg < gap_front;
            if (wary) gap_front = d_wait + mg;
        }
        sc.gap_phys[i] = must_stop ? minimum(gap_front, d) : gap_front;
        sc.gap[i] = gap_front;
        if (sc.f_sig[f] && !line_first)  // held by its signal, it brakes for the line as well (kernels.advance)
            cap_at_line(s, i, d_line);
        sc.v_lead[i] = (line_first || wary) ? T(0) : v_junction;
        sc.stopping[i] = line_first || wary;
    }
    // ... and inside the junction, short of the point where its connection waits (a left turn's internal junction)
    if (any_wait)
        for (const int64_t s : sc.run) {
            const int64_t c = W.conn[s], i = s - lo;
            if (!(W.pos[s] < T(0)) || W.rpos[s] <= 0 || c < 0 || !(W.conn_wait[c] > T(0))) continue;
            const int64_t code = W.link_code(a.conn_link[c]);
            const T d_in = W.conn_wait[c] - W.conn_via[c] - W.pos[s], v = W.speed[s];
            if ((a.conn_yield[c] || code == SIG_GREEN_MINOR) && d_in > W.conn_vis[c]
                && v * v <= T(2.0) * W.decel[s] * d_in && d_in + W.min_gap[s] < sc.gap[i]) {
                sc.gap[i] = d_in + W.min_gap[s];
                sc.v_lead[i] = T(0);
                sc.stopping[i] = 1;
            }
            if (sc.blocked_in[i]) {  // held at its internal junction while its foes come (kernels.advance)
                const T d_hold = clamp_min(d_in, T(0));
                if (d_hold + W.min_gap[s] < sc.gap[i]) {
                    sc.gap[i] = d_hold + W.min_gap[s]; sc.v_lead[i] = T(0); sc.stopping[i] = 1;
                }
                sc.gap_phys[i] = minimum(sc.gap_phys[i], d_hold);
            }
        }
    // 11. cooperation and falling behind: it follows the neighbour it yields to too, where nearer (alongside: gap 0)
    if (a.lane_change)
        for (const int64_t s : sc.run) {
            const int64_t y = W.lc_yield[s], i = s - lo;
            if (y < 0) continue;
            const T g_y = W.pos[y] - W.length[y] - W.pos[s];
            if (g_y < sc.gap[i]) { sc.gap[i] = clamp_min(g_y, T(0)); sc.v_lead[i] = W.speed[y]; sc.stopping[i] = 0; }
        }
    // ... and stops where an urgent change across lanes keeps room ahead (kernels.advance)
    if (W.lc_stop)
        for (const int64_t s : sc.run) {
            const int64_t i = s - lo;
            const T d_s = W.lc_stop[s] - W.pos[s];
            if (d_s > T(0) && d_s + W.min_gap[s] < sc.gap[i]) {
                sc.gap[i] = d_s + W.min_gap[s]; sc.v_lead[i] = T(0); sc.stopping[i] = 1;
            }
        }
    // the queued obstacles (turning speeds, stop lines): IDM toward each, capping the vehicle's speed
    if (!sc.ob_row.empty()) {
        const int64_t K = int64_t(sc.ob_row.size());
        sc.ob_zero.assign(K, T(0));
        sc.ob_v.resize(K); sc.ob_acc.resize(K); sc.ob_tsab.resize(K); sc.ob_tau.resize(K); sc.ob_delta.resize(K);
        for (int64_t j = 0; j < K; ++j) {
            const int64_t s = lo + sc.ob_row[j];
            sc.ob_v[j] = W.speed[s]; sc.ob_acc[j] = W.accel[s]; sc.ob_tsab[j] = W.tsab[s]; sc.ob_tau[j] = W.tau[s];
            sc.ob_delta[j] = a.delta_shared >= 0 ? a.delta_shared : W.delta[s];
        }
        idm_run<T>(K, sc.ob_v.data(), sc.ob_g.data(), sc.ob_v0.data(), sc.ob_zero.data(), sc.ob_acc.data(),
                   sc.ob_tsab.data(), sc.ob_tau.data(), sc.ob_s0.data(), a.delta_shared, sc.ob_delta.data(), a.dt,
                   a.substeps);
        for (int64_t j = 0; j < K; ++j) sc.v_cap[sc.ob_row[j]] = minimum(sc.v_cap[sc.ob_row[j]], sc.ob_v[j]);
    }
    // 5. IDM and movement (kernels.idm_move): a branch-free loop over the window that the compiler vectorizes
    std::copy(W.speed + lo, W.speed + hi, sc.v_new.begin());
    if (a.cf == KRAUSS) {  // 9. kernels.krauss_move
        for (int64_t i = 0; i < n; ++i) {
            const int64_t s = lo + i;
            T v = krauss_speed<T>(W.speed[s], sc.v0[i], sc.gap[i], sc.v_lead[i], W.min_gap[s], W.accel[s], W.decel[s],
                                  W.tau[s], W.sigma[s], W.dawdle ? W.dawdle[i] : T(-1), sc.v_cap[i], a.dt);
            v = minimum(v, clamp_min(sc.gap_phys[i], T(0)) / dt);
            sc.v_new[i] = v;
            sc.x_new[i] = W.pos[s] + v * dt;
        }
    } else {
        // toward a standing point IDM keeps no min gap and never passes it (kernels rule 5, SUMO's stopSpeed)
        sc.s0.resize(n); sc.creep.assign(n, T(0));
        for (int64_t i = 0; i < n; ++i) {
            const int64_t s = lo + i;
            const T mg = W.min_gap[s], to_point = sc.gap[i] - mg;
            const bool st = sc.stopping[i];
            sc.s0[i] = st ? T(0) : mg;
            if (st) {
                sc.gap_phys[i] = to_point < T(STOP_GAP_EPS) ? T(0) : minimum(sc.gap_phys[i], to_point);
                if (W.speed[s] < T(STANDING_EPS) && to_point >= T(STOP_GAP_EPS))
                    sc.creep[i] = safe_stop_speed<T>(to_point, W.decel[s], T(a.dt), a.dt);
            }
            sc.gap[i] = st ? to_point : sc.gap[i];
        }
        idm_move<T>(n, sc.v_new.data(), sc.gap.data(), W.pos + lo, sc.v0.data(), sc.v_lead.data(),
                    (a.has_turn || a.has_conn) ? sc.v_cap.data() : nullptr,
                    sc.gap_phys.data(), W.accel + lo, W.tsab + lo, W.tau + lo, sc.s0.data(), a.delta_shared,
                    W.delta + lo, a.dt, a.substeps, sc.x_new.data(), sc.creep.data());
    }
    for (int64_t i = 0; i < n; ++i)
        sc.arrive[i] = sc.arrive[i] && sc.x_new[i] > W.lane_length[W.lane[lo + i]];

    // 6. transitions: one entry per lane per step, the vehicle landing furthest ahead (then the lowest slot)
    sc.land.resize(F);
    sc.best.assign(L, -inf);
    sc.first.assign(L, std::numeric_limits<int64_t>::max());
    for (size_t f = 0; f < F; ++f) {
        const int64_t s = sc.fronts[f], nl = sc.next_lane[f];
        const T xf = sc.x_new[s - lo], L_f = W.lane_length[W.lane[s]];
        const bool cross = xf > L_f && nl >= 0;
        sc.land[f] = minimum(xf - L_f - sc.via[f], W.lane_length[nl < 0 ? 0 : nl]);
        if (!cross) sc.next_lane[f] = -2;  // marks "does not cross" (nl < 0 never crosses either)
        else if (sc.land[f] > sc.best[nl]) sc.best[nl] = sc.land[f];
    }
    for (size_t f = 0; f < F; ++f) {
        const int64_t nl = sc.next_lane[f];
        if (nl >= 0 && sc.land[f] == sc.best[nl]) sc.first[nl] = std::min(sc.first[nl], sc.fronts[f]);
    }
    sc.crossed.assign(n, 0);
    std::vector<int64_t> &new_lane = sc.new_lane;  // the lane each front vehicle ends on
    new_lane.resize(F);
    for (size_t f = 0; f < F; ++f) {
        const int64_t s = sc.fronts[f], nl = sc.next_lane[f], i = s - lo;
        new_lane[f] = W.lane[s];
        if (nl < 0) continue;
        const T L_f = W.lane_length[W.lane[s]];
        const bool is_best = sc.land[f] == sc.best[nl];
        if (!(is_best && sc.first[nl] == s)) {  // held at the stop line
            sc.x_new[i] = L_f;
            sc.v_new[i] = (L_f - W.pos[s]) / dt;
        } else {
            sc.x_new[i] = sc.land[f];
            new_lane[f] = nl;
            sc.crossed[i] = 1;
        }
    }

    // commit, and this step's lane observations (sums in slot order, as torch.bincount)
    sc.sums.assign(L * 3, 0.0);
    for (const int64_t s : sc.run) {
        const int64_t i = s - lo;
        const T vn = sc.v_new[i];
        const bool halt = vn < stop_speed;
        const T loss = dt * clamp_min(T(1.0) - vn / sc.v0[i], T(0));
        double *sum = &sc.sums[W.lane[s] * 3];  // the lane before the transition
        sum[0] += 1.0; sum[1] += double(vn) * 1.0; sum[2] += double(loss);
        W.pos[s] = sc.x_new[i];
        W.speed[s] = vn;
        if (sc.arrive[i]) { W.status[s] = ARRIVED; W.arrive_step[s] = a.step_index + 1; }
        W.stops[s] += int32_t(halt & !W.halted[s]);  // (& not &&: halting is a coin flip in slot order)
        W.halted[s] = halt;
        W.time_loss[s] = W.time_loss[s] + loss;
    }
    for (size_t f = 0; f < F; ++f) {
        const int64_t s = sc.fronts[f];
        if (sc.crossed[s - lo]) {
            W.lane[s] = new_lane[f]; W.rpos[s] += 1;
            W.conn[s] = sc.f_ci[f];  // crossed by this connection (rules 4', 10)
        }
    }
    for (int64_t k = 0; k < L * 3; ++k) W.acc[k] += sc.sums[k];

    // 2'. leaders and tails for the next step: followers of a vehicle that left lose their leader, a
    // lane whose tail left is empty; a vehicle entering a lane follows its tail and becomes the tail
    sc.leaving.assign(n, 0);
    bool any_leaving = false;
    for (int64_t i = 0; i < n; ++i)
        if (sc.crossed[i] || sc.arrive[i]) { sc.leaving[i] = 1; any_leaving = true; }
    if (any_leaving) {
        for (int64_t s = lo; s < hi; ++s) {
            const int64_t ld = W.leader[s];
            if (ld >= lo && ld < hi && sc.leaving[ld - lo]) W.leader[s] = -1;
        }
        for (int64_t l = 0; l < L; ++l) {
            const int64_t lv = W.last[l];
            if (lv >= lo && lv < hi && sc.leaving[lv - lo]) W.last[l] = -1;
        }
        for (int64_t i = 0; i < n; ++i)
            if (sc.crossed[i]) {
                const int64_t s = lo + i, seg = W.lane[s];
                W.leader[s] = W.last[seg];
                W.last[seg] = s;
            }
    }
    // the carried order must be the sorted one: every vehicle strictly behind its leader
    bool ok = true;
    for (const int64_t s : sc.run) {
        const int64_t ld = W.leader[s];
        if (W.status[s] == RUNNING && ld >= 0 && W.pos[ld] <= W.pos[s]) { ok = false; break; }
    }
    a.resorted[w] = ok ? 0 : 1;
    if (!ok) W.sort_lanes(sc.sorted);
    // 11. lane changes on the state after the move (the order on the lanes is the sorted one here)
    if (a.lane_change) change_lanes<T>(a, W, sc);
    // the standing counters: one more step for a running vehicle that halted, else 0 (as TrafficTwin.step's
    // add_(1).mul_(halted & running) for the tensor kernels)
    if (W.wait)
        for (int64_t s = lo; s < hi; ++s) W.wait[s] = (W.halted[s] && W.status[s] == RUNNING) ? W.wait[s] + 1 : 0;
}

template <typename T> void step_range(const Args &a) {
    Scratch<T> sc;
    const T *conn_wait = static_cast<const T *>(a.conn_wait);
    if (a.has_conn)
        for (int64_t c = 0; c < a.C && !sc.any_wait; ++c) sc.any_wait = conn_wait[c] > T(0);
    if (a.has_conn && a.G > 0) {  // the same network in every world
        sc.lane_link.resize(a.L * a.J);
        for (int64_t k = 0; k < a.L * a.J; ++k) sc.lane_link[k] = a.lane_conn[k] < 0 ? -2 : a.conn_link[a.lane_conn[k]];
    }
    for (int64_t w = a.w0; w < a.w1; ++w) step_world<T>(a, w, sc);
}

}  // namespace

extern "C" {
int twins_traffic_step_f32(const Args *a) { step_range<float>(*a); return 0; }
int twins_traffic_step_f64(const Args *a) { step_range<double>(*a); return 0; }
int twins_traffic_abi() { return static_cast<int>(sizeof(Args)); }
}
