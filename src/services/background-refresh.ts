/**
 * A refresh pass run every `intervalMs` in the background: it never keeps the process alive,
 * never overlaps itself (a slow store skips ticks instead of piling passes up), and hands its
 * failures to `onError`. The caches that use it stay within their staleness bound without it;
 * it only spares requests the store read.
 */
export function backgroundRefresh(pass: () => Promise<void>, intervalMs: number, onError: (error: unknown) => void) {
  let timer: NodeJS.Timeout | undefined;
  let running = false;
  return {
    start(): void {
      timer ??= setInterval(() => {
        if (running) return;
        running = true;
        pass()
          .catch(onError)
          .finally(() => (running = false));
      }, intervalMs);
      timer.unref();
    },
    stop(): void {
      clearInterval(timer);
      timer = undefined;
    },
  };
}
