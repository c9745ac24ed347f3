// One typed function per server route the client uses.
import type { ApiClient } from './client';
import type * as T from './types';

const project = (p: number) => `/projects/${p}`;
const slide = (p: number, s: number) => `/projects/${p}/slides/${s}`;
/** A multipart body with `file` in the field the server reads. */
function fileForm(file: File): FormData {
  const form = new FormData();
  form.append('file', file);
  return form;
}

export class SlidelabelApi {
  constructor(readonly http: ApiClient) {}

  // accounts
  async login(username: string, password: string): Promise<T.LoginResponse> {
    const response = await this.http.json<T.LoginResponse>('POST', '/auth/login', { username, password });
    this.http.setToken(response.token);
    return response;
  }
  async logout(): Promise<void> {
    await this.http.json('POST', '/auth/logout').catch(() => undefined);
    this.http.setToken(null);
  }
  me = () => this.http.json<T.User>('GET', '/auth/me');
  registry = () => this.http.json<T.Registry>('GET', '/registry');
  users = () => this.http.json<T.User[]>('GET', '/users');
  createUser = (body: T.UserCreate) => this.http.json<T.User>('POST', '/users', body);

  // projects, categories, members
  projects = () => this.http.json<T.Project[]>('GET', '/projects');
  project = (p: number) => this.http.json<T.Project>('GET', project(p));
  createProject = (body: T.ProjectCreate) => this.http.json<T.Project>('POST', '/projects', body);
  updateProject = (p: number, body: T.ProjectUpdate) => this.http.json<T.Project>('PATCH', project(p), body);
  addCategory = (p: number, body: T.CategoryCreate) =>
    this.http.json<T.Category>('POST', `${project(p)}/categories`, body);
  updateCategory = (p: number, c: number, body: T.CategoryUpdate) =>
    this.http.json<T.Category>('PATCH', `${project(p)}/categories/${c}`, body);
  mergeCategory = (p: number, c: number, into: number) =>
    this.http.json<{ moved_labels: number }>('POST', `${project(p)}/categories/${c}/merge`, { into });
  members = (p: number) => this.http.json<T.Member[]>('GET', `${project(p)}/members`);
  /** Adds the user to the project with `role`, or changes their role. */
  setMember = (p: number, body: T.MemberSet) => this.http.json<T.Member>('PUT', `${project(p)}/members`, body);
  removeMember = (p: number, userId: number) => this.http.json<void>('DELETE', `${project(p)}/members/${userId}`);

  // slides and jobs
  slideFolders = () => this.http.json<T.SlideFolder[]>('GET', '/slide-folders');
  slides = (p: number) => this.http.json<T.Slide[]>('GET', `${project(p)}/slides`);
  addSlides = (p: number, path: string) => this.http.json<T.SlidesAdded>('POST', `${project(p)}/slides`, { path });
  uploadSlide(p: number, file: File): Promise<T.Slide> {
    const form = new FormData();
    form.append('file', file);
    return this.http.json<T.Slide>('POST', `${project(p)}/slides/upload`, form);
  }
  deleteSlide = (p: number, s: number) => this.http.json<void>('DELETE', slide(p, s));
  prepare = (p: number) => this.http.json<T.Job[]>('POST', `${project(p)}/jobs/prepare`);
  jobs = (p: number) => this.http.json<T.Job[]>('GET', `${project(p)}/jobs`, undefined, { limit: 50 });
  job = (p: number, id: number) => this.http.json<T.JobLog>('GET', `${project(p)}/jobs/${id}`);
  cancelJob = (p: number, id: number) => this.http.json<T.Job>('POST', `${project(p)}/jobs/${id}/cancel`);
  /** A failed or cancelled job runs again as a new job (the answer) with the same work. */
  retryJob = (p: number, id: number) => this.http.json<T.Job>('POST', `${project(p)}/jobs/${id}/retry`);

  // segments and features made by other tools, imported by jobs
  imports = (p: number) => this.http.json<T.ProjectImports>('GET', `${project(p)}/imports`);
  /**
   * GeoJSON, label-mask TIFF or Histomics Label pixelmap as the slide's segments; `downsample`:
   * level-0 px per mask px; `bboxes`: a pixelmap's bounding-box CSV, uploaded first.
   */
  async importSegments(p: number, s: number, file: File,
    { bboxes, ...options }: { downsample?: number; labels?: boolean; bboxes?: File } = {}) {
    const kept = bboxes ? (await this.uploadSource(p, s, bboxes)).name : undefined;
    return this.http.json<T.Job>('POST', `${slide(p, s)}/segments`, fileForm(file), { ...options, bboxes: kept });
  }
  /** Keeps a file for a later import of the slide (a pixelmap's bounding boxes); the name to give it by. */
  uploadSource = (p: number, s: number, file: File) =>
    this.http.json<{ name: string }>('POST', `${slide(p, s)}/sources`, fileForm(file));
  /** TRIDENT/CLAM .h5, Parquet/CSV or Histomics feature.h5 as the slide's features `name` (imported-...). */
  importFeatures = (p: number, s: number, name: string, file: File) =>
    this.http.json<T.Job>('POST', `${slide(p, s)}/features/${encodeURIComponent(name)}`, fileForm(file));

  // viewer data
  tileMetadata = (p: number, s: number) => this.http.json<T.TileMetadata>('GET', `${slide(p, s)}/tiles`);
  /**
   * The superpixels' ids and level-0 centroids (x, y of each in turn), read from the table's
   * binary form (the JSON of a million segments is some 60 MB to parse; this is 32 bytes a
   * segment, kept as typed arrays).
   */
  async superpixelCentroids(p: number, s: number): Promise<{ ids: Uint32Array; xy: Float32Array }> {
    const bytes = await this.http.bytes(`${slide(p, s)}/superpixels`, { format: 'binary' });
    const n = bytes.byteLength / 32; // ids uint32, bbox int32 x 4, centroid float32 x 2, area uint32
    return { ids: new Uint32Array(bytes, 0, n), xy: new Float32Array(bytes.slice(20 * n, 28 * n)) };
  }
  tileUrl = (p: number, s: number) => this.http.url(`${slide(p, s)}/tiles/{z}/{x}/{y}.jpg`);
  indexTileUrl = (p: number, s: number) => this.http.url(`${slide(p, s)}/superpixel-tiles/{z}/{x}/{y}.png`);
  thumbnailUrl = (p: number, s: number, width: number) => this.http.url(`${slide(p, s)}/thumbnail.jpg`, { width });
  superpixelPictureUrl = (p: number, s: number, superpixel: number, size = 192) =>
    this.http.url(`${slide(p, s)}/superpixels/${superpixel}/thumbnail.png`, { size });
  labelArray(p: number, s: number, view: 'mine' | 'effective' = 'mine'): Promise<Uint32Array> {
    return this.http.categoryIds(`${slide(p, s)}/labels.bin`, { view });
  }
  predictionArray(p: number, s: number): Promise<Uint32Array> {
    return this.http.categoryIds(`${slide(p, s)}/predictions.bin`);
  }
  async certaintyArray(p: number, s: number): Promise<Uint8Array> {
    return new Uint8Array(await this.http.bytes(`${slide(p, s)}/certainty.bin`));
  }

  // shapes: what a polygon covers, and grow to similar
  shapeCover = (p: number, s: number, body: T.ShapeCover) =>
    this.http.json<T.ShapeCoverResult>('POST', `${slide(p, s)}/shapes/cover`, body);
  grow = (p: number, s: number, superpixel: number, threshold: number, steps: number) =>
    this.http.json<T.Growth>('GET', `${slide(p, s)}/shapes/grow`, undefined, { superpixel, threshold, steps });
  /** The smart tool's regions from `superpixel` at the server's three scales, strict to loose. */
  growScales = (p: number, s: number, superpixel: number) =>
    this.http.json<T.Growth[]>('GET', `${slide(p, s)}/shapes/scales`, undefined, { superpixel });
  /** Computes (or finds cached) the Segment Anything embedding of a region; `basis` says whether there is a model. */
  samEmbed = (p: number, s: number, region: [number, number, number, number]) =>
    this.http.json<T.SamEmbed>('POST', `${slide(p, s)}/shapes/sam/embed`, { region_level0: region });
  /** The smart tool's three scales at a point: SAM outlines and the superpixels they cover, or classical regions. */
  samSuggest = (p: number, s: number, body: T.SamPoint, signal?: AbortSignal) =>
    this.http.json<T.SmartSuggestions>('POST', `${slide(p, s)}/shapes/sam/suggest`, body, undefined, signal);

  // labels, epochs, queue
  setLabels = (p: number, s: number, body: T.LabelBatch) =>
    this.http.json<T.BatchResult>('PUT', `${slide(p, s)}/labels`, body);
  labelSummary = (p: number) => this.http.json<T.LabelSummary>('GET', `${project(p)}/labels/summary`);
  train = (p: number) => this.http.json<T.Job>('POST', `${project(p)}/epochs`);
  epochs = (p: number) => this.http.json<T.Epoch[]>('GET', `${project(p)}/epochs`);
  queue = (p: number, n: number) => this.http.json<T.Queue>('GET', `${project(p)}/queue`, undefined, { n });
  /** Downloads of an epoch's model: the native file (`slidelabel predict --model`) and ONNX with its JSON sidecar. */
  modelUrl = (p: number, n: number, format: 'native' | 'onnx') =>
    this.http.url(`${project(p)}/epochs/${n}/${format === 'onnx' ? 'model.onnx.zip' : 'model'}`);

  // cohorts: an epoch applied to a server folder, one job per slide over every worker
  startCohort = (p: number, n: number, body: T.CohortCreate) =>
    this.http.json<T.Job>('POST', `${project(p)}/epochs/${n}/cohort`, body);
  cohorts = (p: number) => this.http.json<T.CohortSummary[]>('GET', `${project(p)}/cohorts`);
  cohort = (p: number, id: number) => this.http.json<T.Cohort>('GET', `${project(p)}/cohorts/${id}`);
  /** A download URL of the server's (an `/api/v1/...` path), with the token for the browser. */
  downloadUrl = (apiPath: string) => this.http.url(apiPath.replace(/^\/api\/v1/, ''));

  // review
  review = (p: number, query: T.ReviewQuery) =>
    this.http.json<T.ReviewPage>('GET', `${project(p)}/review`, undefined, { ...query });
  relabel = (p: number, body: T.Relabel) => this.http.json<T.BatchResult>('POST', `${project(p)}/review/relabel`, body);
  agreement = (p: number) => this.http.json<T.Agreement>('GET', `${project(p)}/agreement`);

  // exports: downloads the browser fetches itself
  exportUrl = (p: number, s: number, what: 'geojson' | 'annotation' | 'mask.tiff' | 'predictions.csv', source?: string) =>
    this.http.url(`${slide(p, s)}/export/${what}`, source ? { source } : undefined);
  /** One GeoJSON feature per labelled or predicted segment (QuPath's classified cells), not one per category. */
  cellsUrl = (p: number, s: number, source: 'labels' | 'predictions') =>
    this.http.url(`${slide(p, s)}/export/geojson`, { source, dissolve: false });
}

