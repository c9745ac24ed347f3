// Names for the server's schemas, generated into schema.d.ts from its OpenAPI document
// (`npm run api-types`), so a changed server schema fails the type check here.
import type { components } from './schema';

type Schemas = components['schemas'];

export type User = Schemas['UserPublic'];
export type LoginResponse = Schemas['LoginResponse'];
export type Project = Schemas['ProjectPublic'];
export type ProjectCreate = Schemas['ProjectCreate'];
export type ProjectUpdate = Schemas['ProjectUpdate'];
export type Category = Schemas['CategoryPublic'];
export type CategoryCreate = Schemas['CategoryCreate'];
export type CategoryUpdate = Schemas['CategoryUpdate'];
export type Slide = Schemas['SlidePublic'];
export type SlidesAdded = Schemas['SlidesAdded'];
export type SlideFolder = Schemas['SlideFolderPublic'];
export type Job = Schemas['JobPublic'];
export type JobLog = Schemas['JobLog'];
export type TileMetadata = Schemas['TileMetadata'];
export type SuperpixelTable = Schemas['SuperpixelTablePublic'];
export type LabelBatch = Schemas['LabelBatch'];
export type BatchResult = Schemas['BatchResult'];
export type LabelSummary = Schemas['LabelSummary'];
export type Epoch = Schemas['EpochPublic'];
export type QueueItem = Schemas['QueueItem'];
export type Queue = Schemas['QueuePublic'];
export type ReviewItem = Schemas['ReviewItemPublic'];
export type ReviewPage = Schemas['ReviewPage'];
export type Relabel = Schemas['Relabel'];
export type Agreement = Schemas['Agreement'];
export type Member = Schemas['MemberPublic'];
export type MemberSet = Schemas['MemberSet'];
export type UserCreate = Schemas['UserCreate'];
export type ShapeCover = Schemas['ShapeCover'];
export type ShapeCoverResult = Schemas['ShapeCoverPublic'];
export type Growth = Schemas['GrowthPublic'];
export type SamEmbed = Schemas['SamEmbedPublic'];
export type SamPoint = Schemas['SamPoint'];
export type SmartSuggestions = Schemas['SuggestionsPublic'];
export type ProjectImports = Schemas['ProjectImportsPublic'];
export type SlideImports = Schemas['SlideImportsPublic'];
export type CohortCreate = Schemas['CohortCreate'];
export type CohortSummary = Schemas['CohortSummary'];
export type Cohort = Schemas['CohortPublic'];
export type CohortSlide = Schemas['CohortSlidePublic'];

/** What GET /registry lists: feature extractors, models, strategies, normalisations, slide
 * readers and import formats, each entry marked when it is what a new project gets. */
export type Registry = Schemas['RegistryPublic'];
export type RegistryEntry = Schemas['ChoicePublic'];

/** Query of GET /review. */
export interface ReviewQuery {
  slide_id?: number;
  user_id?: number;
  category_id?: number;
  mismatch?: boolean;
  reviewed?: boolean;
  sort?: string;
  offset?: number;
  limit?: number;
}
