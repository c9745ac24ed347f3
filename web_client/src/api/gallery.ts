// Gallery links: an owner's links of a project, and what a link's page reads with its token alone
// (no login: the token in the path is the only key, and it opens only these GET routes).
import { API_PREFIX, type ApiClient } from './client';
import type { components } from './schema';

type Schemas = components['schemas'];

export type GalleryLink = Schemas['GalleryLinkPublic'];
export type GalleryLinkCreated = Schemas['GalleryLinkCreated'];
export type GalleryLinkCreate = Schemas['GalleryLinkCreate'];
export type GalleryOverlay = GalleryLink['overlay'];
export type Gallery = Schemas['GalleryPublic'];
export type GallerySlide = Schemas['GallerySlide'];
export type GalleryEpoch = Schemas['GalleryEpoch'];

/** The address of a link's page beside the app: `<app>#/gallery/<token>`. */
export function galleryAddress(token: string, base: string = location.href): string {
  return `${base.split('#')[0]}#/gallery/${encodeURIComponent(token)}`;
}

/** An owner's gallery links of project `projectId`. */
export class GalleryLinks {
  private readonly path: string;

  constructor(private readonly http: ApiClient, projectId: number) {
    this.path = `/projects/${projectId}/gallery`;
  }

  list = () => this.http.json<GalleryLink[]>('GET', this.path);
  /** A new link; the answer holds its token, which the server shows this once. */
  publish = (body: GalleryLinkCreate) => this.http.json<GalleryLinkCreated>('POST', this.path, body);
  revoke = (id: number) => this.http.json<GalleryLink>('DELETE', `${this.path}/${id}`);
}

/** What the page of one link reads. */
export class GalleryApi {
  private readonly path: string;

  constructor(private readonly http: ApiClient, token: string) {
    this.path = `/gallery/${encodeURIComponent(token)}`;
  }

  page = () => this.http.json<Gallery>('GET', this.path);
  tileMetadata = (s: number) => this.http.json<Schemas['TileMetadata']>('GET', `${this.path}/slides/${s}/tiles`);
  /** URLs the viewer loads itself: they carry no login token, the link's token is in the path. */
  tileUrl = (s: number) => `${API_PREFIX}${this.path}/slides/${s}/tiles/{z}/{x}/{y}.jpg`;
  indexTileUrl = (s: number) => `${API_PREFIX}${this.path}/slides/${s}/superpixel-tiles/{z}/{x}/{y}.png`;
  thumbnailUrl = (s: number, width = 160) => `${API_PREFIX}${this.path}/slides/${s}/thumbnail.jpg?width=${width}`;
  /** The category id drawn on each superpixel (index = superpixel id, 0 = none). */
  overlay(s: number): Promise<Uint32Array> {
    return this.http.categoryIds(`${this.path}/slides/${s}/overlay.bin`);
  }
}
