// Timings of what a labeller waits for, as User Timing measures (read by the end-to-end tests
// through `performance.getEntriesByName`). Each start mark gets its own name, so a measure taken
// a frame later never uses the mark of a later key press.

let counter = 0;

export const perf = {
  /** Marks now; returns the mark's unique name for `measure`. */
  mark(name: string): string {
    counter += 1;
    const unique = `${name}#${counter}`;
    performance.mark(unique);
    return unique;
  },
  /** Records measure `name` from mark `start` (a name from `mark`) to now; returns its milliseconds. */
  measure(name: string, start: string): number | undefined {
    if (performance.getEntriesByName(start, 'mark').length === 0) return undefined;
    return performance.measure(name, start).duration;
  },
};
