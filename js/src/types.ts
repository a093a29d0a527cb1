// The synced state of one ClipBranches widget, as the Python side declares it.
// Keys starting with `user_` are written only here (the user's intent); every
// other key is written only by Python (results).

export type Label = 1 | -1 | 0;

/** Binary data as it arrives from the kernel: ipywidgets hands buffers over as DataViews. */
export type Bytes = DataView | ArrayBuffer | Uint8Array;

export interface Item {
  id: number;
  votes: number;
  /** "new": not among the previous round's results; "rejected": a positive
   * of yours the model does not accept (shown anyway); "" for neither. */
  badge: "" | "new" | "rejected";
  /** The rank-order score (votes + closeness for refined results, similarity for
   * neighbours): never increasing in grid order; null where nothing is ranked. */
  score: number | null;
  name: string;
  thumb: Bytes | null;
  w: number;
  h: number;
  mime: string;
  problem: string;
}

export interface State {
  // front-end owned
  user_labels: Record<string, number>;
  user_page: number;
  user_query: string;
  user_selection: number[];
  user_box: number;
  // Python owned
  items: Item[];
  total: number;
  page_count: number;
  page_shown: number;
  page_size: number;
  kind: string;
  status: string;
  timings: Record<string, number>;
  error: string;
  n_boxes: number;
  search_path: string;
  n_items: number;
  text_search: boolean;
  rounds: number;
  facets: Facet[];
  box_shown: number;
  shown_total: number;
  summary: string;
  reply: Reply;
}

/** Which action the results in the traits answer (view and sequence number). */
export interface Reply {
  view: string;
  seq: number;
  action: string;
  ok: boolean;
  cancelled?: boolean;
}

/** One box of the model and how many results it contains. */
export interface Facet {
  box: number;
  count: number;
  dims: number[];
}

export interface BoxWhy {
  box: number;
  bounds: Record<string, [number, number]>;
  code: Record<string, number>;
}

export interface Detail {
  id: number;
  uri: string | null;
  name: string;
  label: number;
  rank: number | null;
  votes: number | null;
  score: number | null;
  rank_score: number | null;
  path: string | null;
  similarity: number | null;
  n_boxes: number;
  boxes: BoxWhy[];
  kind: string;
  /** Of a positive after a refine: "accepted" by the model, or "rejected" (shown
   * anyway); "" otherwise. The same definition as the badge and the summary. */
  verdict: "" | "accepted" | "rejected";
  /** The score an item needs to be accepted (null: no such cut). */
  cut: number | null;
  width: number;
  height: number;
  mime: string;
  problem: string;
}

export interface Ack {
  type: "ack";
  req: string;
  seq: number;
  action: string;
  ok: boolean;
  error?: string;
  detail?: Detail;
  path?: string;
  count?: number;
  /** The action was cancelled: nothing it would change has changed. */
  cancelled?: boolean;
  /** Of a cancel: "running" / "queued" (its target answers cancelled) or "" (too late). */
  found?: string;
  buffers: DataView[];
  ms: number;
}
