// The part of GeoJS (which ships no types) that the viewer uses.
declare module 'geojs' {
  export interface GeoPoint {
    x: number;
    y: number;
  }
  export interface Bounds {
    left: number;
    top: number;
    right: number;
    bottom: number;
  }
  export interface GeoEvent {
    geo: GeoPoint;
    map: GeoPoint;
    buttonsDown?: { left?: boolean; right?: boolean };
    modifiers?: { shift?: boolean; ctrl?: boolean; alt?: boolean; meta?: boolean };
  }
  export interface Feature {
    featureType: string;
    pointSearch(point: GeoPoint, gcs?: string | null): { index: number[]; found: unknown[] };
  }
  export interface Layer {
    url(url?: string): unknown;
    opacity(value?: number): number | Layer;
    visible(value?: boolean): boolean | Layer;
    draw(): Layer;
    features(): Feature[];
    data(value?: unknown[]): unknown;
    indexModified(first: number, last?: number): Layer;
    style(key: string, value?: unknown): Layer;
    reset?(): Layer;
    node(): { css(key: string, value: string): void };
  }
  export interface Map {
    createLayer(kind: string, options: Record<string, unknown>): Layer;
    deleteLayer(layer: Layer): void;
    center(point?: GeoPoint, gcs?: string | null, ignoreDiscreteZoom?: boolean): GeoPoint;
    zoom(value?: number, origin?: unknown, ignoreDiscreteZoom?: boolean, ignoreClampBounds?: boolean,
      noTrigger?: boolean): number;
    bounds(value?: Bounds, gcs?: string | null): Bounds;
    gcs(): string;
    ingcs(): string;
    boundsFromZoomAndCenter(zoom: number, center: GeoPoint, rotation?: number, gcs?: string | null): Bounds;
    zoomAndCenterFromBounds(bounds: Bounds, rotation?: number): { zoom: number; center: GeoPoint };
    displayToGcs(point: GeoPoint, gcs?: string | null): GeoPoint;
    gcsToDisplay(point: GeoPoint, gcs?: string | null): GeoPoint;
    geoOn(event: string, handler: (event: GeoEvent) => void): Map;
    pan(delta: GeoPoint): Map;
    size(value?: { width: number; height: number }): { width: number; height: number };
    draw(): Map;
    exit(): void;
    unitsPerPixel(zoom?: number): number;
    scheduleAnimationFrame(callback: () => void): void;
    onIdle(callback: () => void): Map;
    interactor(): { options(value?: Record<string, unknown>): Record<string, unknown> };
  }
  interface PixelParams {
    map: Record<string, unknown>;
    layer: Record<string, unknown>;
  }
  interface Geo {
    map(options: Record<string, unknown>): Map;
    mapInteractor(options: Record<string, unknown>): unknown;
    transform: { transformCoordinates(from: string, to: string, point: GeoPoint): GeoPoint };
    util: {
      pixelCoordinateParams(node: HTMLElement | string, width: number, height: number, tileWidth: number,
        tileHeight: number): PixelParams;
    };
    event: Record<string, string> & { mouseclick: string; pan: string; zoom: string; mousemove: string };
    webgl?: { webglRenderer?: { supported(): boolean } };
  }
  const geo: Geo;
  export default geo;
}
