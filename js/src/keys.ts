// Keyboard map of the grid. One table drives both the handler and the `?`
// overlay, so the help can never disagree with what the keys do.

export type Command =
  | "positive" | "negative" | "clear" | "toggle" | "select"
  | "left" | "right" | "up" | "down" | "first" | "last"
  | "open" | "close" | "refine" | "more" | "next-page" | "prev-page"
  | "search" | "help";

export interface Binding {
  keys: string[];
  command: Command;
  help: string;
}

export const BINDINGS: Binding[] = [
  { keys: ["1", "+"], command: "positive", help: "mark positive" },
  { keys: ["2", "-"], command: "negative", help: "mark negative" },
  { keys: ["0", "Backspace", "Delete"], command: "clear", help: "clear the label" },
  { keys: [" "], command: "toggle", help: "cycle: none \u2192 + \u2192 \u2212 \u2192 none (as a click)" },
  { keys: ["x"], command: "select", help: "select / unselect (for \u201cmore like these\u201d; or Shift+click)" },
  { keys: ["ArrowLeft", "h"], command: "left", help: "previous image" },
  { keys: ["ArrowRight", "l"], command: "right", help: "next image" },
  { keys: ["ArrowUp", "k"], command: "up", help: "image above" },
  { keys: ["ArrowDown", "j"], command: "down", help: "image below" },
  { keys: ["Home"], command: "first", help: "first image of the page" },
  { keys: ["End"], command: "last", help: "last image of the page" },
  { keys: ["Enter", "o"], command: "open", help: "details: full image and why it matched" },
  { keys: ["Escape"], command: "close", help: "close details / help" },
  { keys: ["r"], command: "refine", help: "refine on the labels" },
  { keys: ["m"], command: "more", help: "more like these (selection, else positives)" },
  { keys: ["n", "PageDown", "]"], command: "next-page", help: "next page" },
  { keys: ["p", "PageUp", "["], command: "prev-page", help: "previous page" },
  { keys: ["/"], command: "search", help: "focus the search box" },
  { keys: ["?"], command: "help", help: "show / hide this help" },
];

const BY_KEY = new Map<string, Command>();
for (const b of BINDINGS) for (const k of b.keys) BY_KEY.set(k, b.command);

/** The command of a key event, or null (modifier chords are left to the page). */
export function commandOf(e: KeyboardEvent): Command | null {
  if (e.ctrlKey || e.metaKey || e.altKey) return null;
  if (e.shiftKey && e.key === "Enter") return null; // Shift+Enter stays "run the cell"
  return BY_KEY.get(e.key) ?? null;
}

export function keyName(k: string): string {
  const names: Record<string, string> = {
    " ": "Space", ArrowLeft: "\u2190", ArrowRight: "\u2192", ArrowUp: "\u2191", ArrowDown: "\u2193",
  };
  return names[k] ?? k;
}
