// Actions are custom messages with a request id; the kernel answers each with
// an ack. Results never travel in the ack: they arrive through the synced
// traits (set under hold_sync on the Python side), so every view of the same
// model shows the same thing.
import type { AnyModel } from "@anywidget/types";
import type { Ack, State } from "./types";

interface Pending {
  action: string;
  t0: number;
  resolve: (ack: Ack) => void;
}

/** After this long without an ack the view says so instead of spinning silently. */
export const SLOW_MS = 20000;

export class Actions {
  private readonly prefix = Math.random().toString(36).slice(2, 8);
  private counter = 0;
  private readonly pending = new Map<string, Pending>();
  private readonly onMsg = (msg: any, buffers: DataView[]) => this.receive(msg, buffers);

  constructor(private readonly model: AnyModel<State>, private readonly onChange: () => void) {
    model.on("msg:custom", this.onMsg);
  }

  get busy(): string[] {
    return [...this.pending.values()].map((p) => p.action);
  }

  get oldest(): number | null {
    let t: number | null = null;
    for (const p of this.pending.values()) t = t === null ? p.t0 : Math.min(t, p.t0);
    return t;
  }

  send(action: string, extra: Record<string, unknown> = {}): Promise<Ack> {
    // request ids are unique across views of the same model (several cells may show it)
    const req = `${this.prefix}-${++this.counter}`;
    return new Promise<Ack>((resolve) => {
      this.pending.set(req, { action, t0: performance.now(), resolve });
      this.model.send({ type: "action", action, req, ...extra });
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
