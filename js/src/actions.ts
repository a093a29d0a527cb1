// Actions are custom messages with a request id; the kernel answers each with
// an ack. Results never travel in the ack: they arrive through the synced
// traits (set under hold_sync on the Python side), so every view of the same
// model shows the same thing.
//
// ipywidgets holds a state update back while an earlier one is unanswered, but
// sends custom messages at once: an action could overtake the update of the
// click just before it. So every action carries the state it acts on and a
// sequence number; the `reply` trait names the action the results answer, and
// a view ignores results older than its latest action (`isStale`).
import type { AnyModel } from "@anywidget/types";
import type { Ack, Reply, State } from "./types";

interface Pending {
  action: string;
  seq: number;
  t0: number;
  resolve: (ack: Ack) => void;
}

/** After this long without an ack the view says so instead of spinning silently. */
export const SLOW_MS = 20000;

/** Actions that only read: they answer in the ack and change no shared state. */
export const READ_ONLY = new Set(["detail", "export", "cancel"]);

export class Actions {
  /** This view's name in `reply.view` (several cells may show the same model). */
  readonly view = Math.random().toString(36).slice(2, 8);
  private seq = 0;
  private latest = -1; // sequence number of this view's latest state-changing action
  private latestReq = ""; // ... and its request id, while it waits for its ack
  private readonly pending = new Map<string, Pending>();
  private readonly onMsg = (msg: any, buffers: DataView[]) => this.receive(msg, buffers);

  constructor(private readonly model: AnyModel<State>, private readonly onChange: () => void) {
    model.on("msg:custom", this.onMsg);
  }

  get busy(): string[] {
    return [...this.pending.values()].map((p) => p.action);
  }

  /** The sequence numbers of this view's unanswered `action`s, oldest first. */
  pendingSeqs(action: string): number[] {
    return [...this.pending.values()].filter((p) => p.action === action).map((p) => p.seq).sort((x, y) => x - y);
  }

  get oldest(): number | null {
    let t: number | null = null;
    for (const p of this.pending.values()) t = t === null ? p.t0 : Math.min(t, p.t0);
    return t;
  }

  /** True when the traits answer an action of this view older than its latest one,
   * and that one is still unanswered (its ack comes after its results: once it is
   * acknowledged, the traits are as new as they will get). */
  isStale(reply: Reply | undefined): boolean {
    if (!this.pending.has(this.latestReq)) return false;
    return !!reply && reply.view === this.view && reply.seq >= 0 && reply.seq < this.latest;
  }

  send(action: string, extra: Record<string, unknown> = {}, state?: Partial<State>): Promise<Ack> {
    const seq = ++this.seq;
    // request ids are unique across views of the same model
    const req = `${this.view}-${seq}`;
    if (!READ_ONLY.has(action)) {
      this.latest = seq;
      this.latestReq = req;
    }
    return new Promise<Ack>((resolve) => {
      this.pending.set(req, { action, seq, t0: performance.now(), resolve });
      this.model.send({ type: "action", action, req, seq, view: this.view, ...(state ? { state } : {}), ...extra });
      this.onChange();
    });
  }

  private receive(msg: any, buffers: DataView[]): void {
    if (!msg || msg.type !== "ack" || typeof msg.req !== "string") return;
    const p = this.pending.get(msg.req);
    if (!p) return; // another view's request
    this.pending.delete(msg.req);
    p.resolve({ ...msg, buffers: buffers ?? [], ms: performance.now() - p.t0 });
    this.onChange();
  }

  dispose(): void {
    this.model.off("msg:custom", this.onMsg);
    this.pending.clear();
  }
}
