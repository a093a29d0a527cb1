import type { Bytes } from "./types";

/** An object URL for encoded image bytes (the caller revokes it). */
export function imageUrl(data: Bytes, mime: string): string {
  const view =
    data instanceof DataView
      ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
      : data instanceof ArrayBuffer
        ? new Uint8Array(data)
        : data;
  return URL.createObjectURL(new Blob([view as BlobPart], { type: mime || "image/jpeg" }));
}

export function byteLength(data: Bytes | null): number {
  return data ? data.byteLength : 0;
}
