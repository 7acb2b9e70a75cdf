/**
 * The schema of every WebSocket message and HTTP body, in one place (entry point
 * `@presence/protocol/schema`). The TypeScript types of the main entry are derived from these
 * (`messages.ts`, type-only imports), the server compiles its decoders from them, and the JSON
 * Schema of the protocol and the OpenAPI document of the HTTP API are generated from them.
 *
 * Browser code never imports this module: the client depends on the types and constants of the
 * main entry only, so no schema library reaches its bundle (its size test checks that).
 *
 * The schemas check shape only. Rules that need the server's configuration — channel-name and
 * user-id length, meta size/depth/keys, configured custom states, message length, `expiresAt` in
 * the future — are checked by the server's model and answered with their own error codes; the
 * descriptions say which.
 */
import { Type, type SchemaOptions, type Static, type TLiteral, type TSchema, type TUnion } from '@sinclair/typebox';
import { ERROR_CODES, type ErrorCode as ErrorCodeName } from './errors.js';
import type { Meta as MetaType } from './messages.js';

/**
 * How a schema is named in the JSON Schema (`$defs`) and OpenAPI (`components.schemas`)
 * documents: every other use of it becomes a `$ref`. A symbol, so it never reaches the JSON.
 */
export const SCHEMA_NAME = Symbol.for('presence.schema.name');
/**
 * What an error message says a value must be (`"users" must be <this>`), where the wording
 * derived from the schema's kind is not the one the server has always used.
 */
export const EXPECTED = Symbol.for('presence.schema.expected');

type Annotated = { [SCHEMA_NAME]?: string; [EXPECTED]?: string };

/** Every named schema as defined (not a refined copy of it), by name: the source of its definition. */
const DEFINITIONS = new Map<string, TSchema>();

function named<T extends TSchema>(name: string, schema: T): T {
  if (DEFINITIONS.has(name)) throw new Error(`two schemas are named ${name}`);
  (schema as T & Annotated)[SCHEMA_NAME] = name;
  DEFINITIONS.set(name, schema);
  return schema;
}

/** A copy of `schema` with other options (a description of this use, an error wording). */
function refine<T extends TSchema>(schema: T, options: SchemaOptions & Annotated): T {
  return { ...schema, ...options };
}

type Literals<T extends readonly string[]> = { -readonly [K in keyof T]: TLiteral<T[K] & string> };

function literals<const T extends readonly string[]>(values: T, options?: SchemaOptions): TUnion<Literals<T>> {
  return Type.Union(
    values.map((value) => Type.Literal(value)),
    options,
  ) as unknown as TUnion<Literals<T>>;
}

// ---------------------------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------------------------

export const Status = named(
  'Status',
  literals(['online', 'away', 'busy', 'offline'], {
    description: 'Status as other users see it. `invisible` never appears: an invisible user is shown as `offline`.',
  }),
);
export const ManualStatus = named(
  'ManualStatus',
  literals(['away', 'busy', 'invisible'], { description: 'What a user can set by hand.' }),
);
export const Visibility = named(
  'Visibility',
  literals(['everyone', 'contacts', 'nobody'], { description: "Who may see a user's presence outside shared channels." }),
);

/**
 * Any JSON object; the values are any JSON. Size, depth and key-count limits are configuration
 * and checked after merging (META_TOO_LARGE), so the schema stops at "an object".
 */
export const Meta = named(
  'Meta',
  Type.Unsafe<MetaType>(
    Type.Object(
      {},
      {
        description:
          'Arbitrary small JSON object, merged by updates (a `null` value removes the key). The server limits its serialized size, depth and key count (META_TOO_LARGE) and refuses the keys `__proto__`, `constructor` and `prototype`.',
      },
    ),
  ),
);

export const Timestamp = named('Timestamp', Type.String({ format: 'date-time', description: 'ISO 8601 UTC time.' }));

export const Ref = named(
  'Ref',
  Type.Union([Type.Number(), Type.String({ maxLength: 64 })], {
    description: 'Echoed by the `ack` or `error` that answers the command: a finite number or a string of at most 64 characters.',
    [EXPECTED]: 'a finite number or a string of at most 64 characters',
  } as SchemaOptions),
);

export const ChannelName = named(
  'ChannelName',
  Type.String({
    description: 'Channel name: 1–128 (configurable) characters of `[A-Za-z0-9_:.@-]`; other names are refused with INVALID_CHANNEL.',
  }),
);
export const UserId = named(
  'UserId',
  Type.String({ description: 'User id: 1–128 (configurable) characters; other ids are refused with INVALID_USER_ID.' }),
);

const nullableString = (description: string) => Type.Union([Type.String(), Type.Null()], { description });

/**
 * The manual status fields, shared by the `status` command, `POST /realtime/presence/update` and
 * the status a reconnecting client hands back at connect (`?status=&state=&message=&expiresAt=`).
 * A field added here is accepted by all three.
 */
export const ManualStatusFields = {
  status: Type.Optional(
    literals(['online', 'away', 'busy', 'invisible'], {
      description: '`online` clears the manual status (and state); `away`, `busy` and `invisible` set it.',
    }),
  ),
  state: Type.Optional(nullableString('A configured custom state (UNKNOWN_STATE otherwise), or `null` to clear it.')),
  message: Type.Optional(nullableString('Custom status text (≤ 256 characters by default, MESSAGE_TOO_LONG), or `null` to clear it.')),
  expiresAt: Type.Optional(
    nullableString(
      'ISO 8601 time with a zone after which status, state and message clear (INVALID_EXPIRY when malformed or not in the future); absent or `null`: never.',
    ),
  ),
};

/** The status fields: the manual status and who may see it. */
export const StatusFields = {
  ...ManualStatusFields,
  visibility: Type.Optional(refine(Visibility, { description: "Who may see this user's presence outside shared channels." })),
};

// ---------------------------------------------------------------------------------------------
// Presence objects
// ---------------------------------------------------------------------------------------------

const userPresenceFields = {
  userId: UserId,
  status: Status,
  state: Type.Optional(Type.String({ description: 'Custom state name from configuration; absent when none or offline.' })),
  message: Type.Optional(Type.String({ description: 'Custom status text; absent when none or offline.' })),
  expiresAt: Type.Optional(refine(Timestamp, { description: 'When the manual status, state and message clear by themselves.' })),
  meta: Meta,
  lastSeen: Type.Union([Timestamp, Type.Null()], {
    description: 'When the user was last online (last activity or disconnect); `null` if never seen.',
  }),
  lastActive: Type.Optional(refine(Timestamp, { description: 'Last activity of any session, when known.' })),
  devices: Type.Array(Type.String(), { description: "Distinct device kinds of the user's sessions, sorted; empty when offline." }),
};

export const UserPresence = named(
  'UserPresence',
  Type.Object(userPresenceFields, { description: "One user's presence merged over all their sessions, as seen by another user." }),
);

export const SelfPresence = named(
  'SelfPresence',
  Type.Object(
    {
      ...userPresenceFields,
      manualStatus: Type.Union([ManualStatus, Type.Null()], { description: 'The manual status set, if any.' }),
      visibility: Visibility,
    },
    { description: "The user's own presence, as returned to themselves." },
  ),
);

export const Member = named(
  'Member',
  Type.Object(
    {
      ...userPresenceFields,
      channelMeta: refine(Meta, { description: 'Per-channel member meta (cursor, mode, …).' }),
      joinedAt: refine(Timestamp, { description: 'When the user last became visible in the channel: their first join, or their last return from invisible if later.' }),
    },
    { description: 'A channel member: a user (not a session) with their per-channel meta.' },
  ),
);

// ---------------------------------------------------------------------------------------------
// Client → server
// ---------------------------------------------------------------------------------------------

function command<const T extends string, P extends Record<string, TSchema>>(type: T, properties: P, description: string) {
  // `type` and `ref` first: they are checked (and reported) before the command's own fields.
  return named(
    `${type === 'channel.meta' ? 'ChannelMeta' : type[0].toUpperCase() + type.slice(1)}Command`,
    Type.Object({ type: Type.Literal(type), ref: Type.Optional(Ref), ...properties }, { description }),
  );
}

const userIds = (description: string) =>
  Type.Array(UserId, { description, [EXPECTED]: 'an array of user id strings' } as SchemaOptions);

export const JoinCommand = command(
  'join',
  { channel: ChannelName, meta: Type.Optional(refine(Meta, { description: 'Per-channel member meta.' })) },
  'Join a channel; answered by `presence.sync`.',
);
export const LeaveCommand = command('leave', { channel: ChannelName }, 'Leave a channel (immediately for that channel).');
export const StatusCommand = command('status', StatusFields, 'Set or clear the manual status, state, message, expiry and visibility.');
export const MetaCommand = command('meta', { meta: Meta }, "Merge into the user's meta.");
export const ChannelMetaCommand = command(
  'channel.meta',
  { channel: ChannelName, meta: Meta },
  "Merge into the user's meta in one joined channel.",
);
export const ActivityCommand = command('activity', {}, 'The user did something: resets idle.');
export const IdleCommand = command('idle', {}, 'The client reports the user idle (e.g. tab hidden).');
export const TypingCommand = command(
  'typing',
  { channel: ChannelName, typing: Type.Boolean() },
  '`true` starts or refreshes typing in a joined channel; `false` ends it.',
);
export const WatchCommand = command('watch', { users: userIds('User ids to watch.') }, "Watch users' presence; answered by `user.sync`.");
export const UnwatchCommand = command('unwatch', { users: userIds('User ids to stop watching.') }, 'Stop watching users.');
export const PingCommand = command('ping', {}, 'Answered by `pong`.');
export const MembersCommand = command(
  'members',
  {
    channel: ChannelName,
    cursor: Type.Optional(Type.String({ description: 'The `nextCursor` of the previous page; absent for the first page.' })),
    limit: Type.Optional(
      Type.Integer({
        minimum: 1,
        description: 'Members per page (default 100); more than the server\'s `PRESENCE_MAX_PAGE_SIZE` gives pages of that size.',
      }),
    ),
  },
  "One page of a joined channel's visible members, by user id (NOT_IN_CHANNEL otherwise); answered by `presence.page` instead of an ack. How a client in occupancy mode reads the whole list.",
);
export const LogoutCommand = command('logout', {}, 'Offline at once on every session, then close.');

/** Every command, by its `type`: the server decodes a frame with the schema its type names. */
export const COMMANDS = {
  join: JoinCommand,
  leave: LeaveCommand,
  status: StatusCommand,
  meta: MetaCommand,
  'channel.meta': ChannelMetaCommand,
  activity: ActivityCommand,
  idle: IdleCommand,
  typing: TypingCommand,
  watch: WatchCommand,
  unwatch: UnwatchCommand,
  ping: PingCommand,
  members: MembersCommand,
  logout: LogoutCommand,
};

export const ClientMessage = named(
  'ClientMessage',
  Type.Union(
    [
      JoinCommand,
      LeaveCommand,
      StatusCommand,
      MetaCommand,
      ChannelMetaCommand,
      ActivityCommand,
      IdleCommand,
      TypingCommand,
      WatchCommand,
      UnwatchCommand,
      PingCommand,
      MembersCommand,
      LogoutCommand,
    ],
    { description: 'A frame from the client: one command as a JSON object. Unknown fields are ignored.' },
  ),
);

// ---------------------------------------------------------------------------------------------
// Server → client
// ---------------------------------------------------------------------------------------------

const count = (description: string) => Type.Integer({ minimum: 0, description });

export const Timeouts = named(
  'Timeouts',
  Type.Object({
    heartbeatMs: count('The server pings every this many ms.'),
    idleMs: count('A session without activity for this long is idle.'),
    offlineDelayMs: count('How long a user stays present after their last session drops.'),
    typingMs: count('Typing ends after this long without a refresh.'),
  }),
);

export const Limits = named(
  'Limits',
  Type.Object({
    maxFrameBytes: count('Largest frame the server accepts.'),
    maxMetaBytes: count('Largest serialized meta.'),
    maxMetaDepth: count('Deepest meta nesting.'),
    maxMetaKeys: count('Most meta keys, counted at every depth.'),
    maxMessageLength: count('Longest custom status message, in characters.'),
    maxChannelNameLength: count('Longest channel name.'),
    maxChannelsPerSession: count('Most channels one session may join.'),
    maxSessionsPerUser: count('Most sessions of one user on one node.'),
    maxWatchedUsers: count('Most users one session may watch.'),
    rateLimitPerSecond: count('Sustained commands per second per session.'),
    rateLimitBurst: count('Commands a session may send at once above the rate.'),
    maxOutboundBufferBytes: count('Unsent bytes after which a slow client is closed.'),
  }),
);

const seq = Type.Integer({ minimum: 0, description: "Increases by one per event of the channel: a gap means events were missed (resync)." });

export const StatusCounts = named(
  'StatusCounts',
  Type.Object(
    {
      online: count('Visible members whose status is `online`.'),
      away: count('Visible members whose status is `away`.'),
      busy: count('Visible members whose status is `busy`.'),
    },
    { description: 'Visible members of a channel by status (invisible users are counted nowhere); they add up to `count`.' },
  ),
);
const serverStatus = literals(['online', 'away', 'busy']);

export const WelcomeMessage = named(
  'WelcomeMessage',
  Type.Object(
    {
      type: Type.Literal('welcome'),
      userId: UserId,
      sessionId: Type.String({ description: 'Pass as `?sessionId=` when reconnecting to resume this session.' }),
      resumed: Type.Boolean({ description: '`true` when `sessionId` named a session still inside its offline delay and it was resumed.' }),
      serverTime: Timestamp,
      timeouts: Timeouts,
      limits: Limits,
      states: Type.Record(Type.String(), serverStatus, { description: 'Custom states the server accepts, with the status each maps to.' }),
      self: refine(SelfPresence, { description: "The user's own presence as stored (manual status survives reconnects)." }),
      sessionToken: Type.Optional(
        Type.String({
          description:
            'A capability for this one session: send it to `POST /realtime/disconnect` (the unload beacon) to end the session after a short grace. Renewed by `session.token` before it expires. Absent from servers older than this field.',
        }),
      ),
    },
    { description: 'Sent once, first, on every connection.' },
  ),
);
export const PresenceSyncMessage = named(
  'PresenceSyncMessage',
  Type.Object(
    { type: Type.Literal('presence.sync'), channel: ChannelName, members: Type.Array(Member), seq },
    { description: 'Full state of a channel: on join, on resume, and whenever the server resyncs. To the joiner.' },
  ),
);
export const PresenceJoinMessage = named(
  'PresenceJoinMessage',
  Type.Object(
    { type: Type.Literal('presence.join'), channel: ChannelName, member: Member, seq },
    { description: 'A user became a member (first session joined, or came back from invisible). To members.' },
  ),
);
export const PresenceLeaveMessage = named(
  'PresenceLeaveMessage',
  Type.Object(
    {
      type: Type.Literal('presence.leave'),
      channel: ChannelName,
      userId: UserId,
      lastSeen: Type.Union([Timestamp, Type.Null()]),
      seq,
    },
    { description: 'A user stopped being a member (last session left, offline delay ran out, or went invisible).' },
  ),
);
export const PresenceUpdateMessage = named(
  'PresenceUpdateMessage',
  Type.Object(
    { type: Type.Literal('presence.update'), channel: ChannelName, member: Member, seq },
    { description: "Status, meta or channel meta of a member changed. To all members, the user's own sessions too." },
  ),
);
export const TypingMessage = named(
  'TypingMessage',
  Type.Object(
    { type: Type.Literal('typing'), channel: ChannelName, userId: UserId, typing: Type.Boolean() },
    { description: "Typing started or stopped. To the channel's other members (never to the typer)." },
  ),
);
export const PresenceOccupancyMessage = named(
  'PresenceOccupancyMessage',
  Type.Object(
    {
      type: Type.Literal('presence.occupancy'),
      channel: ChannelName,
      count: count('Visible members of the channel (invisible users are never counted).'),
      statuses: StatusCounts,
      sample: Type.Optional(
        Type.Array(Member, {
          description:
            'The whole sample, replacing any held before: sent when the channel enters occupancy mode for this connection, and as the answer to `join`. Watched users and contacts present come first, then who is typing, then recent joiners.',
        }),
      ),
      added: Type.Optional(Type.Array(Member, { description: 'Sample diff: members now in the sample, or in it with a changed presence.' })),
      removed: Type.Optional(Type.Array(UserId, { description: 'Sample diff: user ids no longer in the sample.' })),
      typing: Type.Optional(
        Type.Array(UserId, { description: 'Who of the sample is typing now (the whole list, with every sample or sample diff).' }),
      ),
    },
    {
      description:
        'Occupancy mode (large channels, connections with `features=occupancy`): counts every window when they changed, the sample and its diffs at most every sample interval. Replaces the member list and member events; `presence.sync` ends it.',
    },
  ),
);
/** One page of a channel's members: the `members` command's answer and the HTTP API's. */
const channelPageFields = {
  channel: ChannelName,
  count: count('Visible members in the whole channel (not only this page).'),
  statuses: StatusCounts,
  members: Type.Array(Member, { description: 'One page of members, by user id.' }),
  nextCursor: Type.Optional(Type.String({ description: 'Pass as `cursor` to get the next page; absent on the last page.' })),
};
export const PresencePageMessage = named(
  'PresencePageMessage',
  Type.Object(
    {
      type: Type.Literal('presence.page'),
      ref: Type.Optional(refine(Ref, { description: 'The `ref` of the `members` command this answers.' })),
      ...channelPageFields,
    },
    { description: 'Answer to `members`: one page of the channel as it is now.' },
  ),
);
export const UserSyncMessage = named(
  'UserSyncMessage',
  Type.Object(
    { type: Type.Literal('user.sync'), users: Type.Array(UserPresence) },
    { description: 'Answer to `watch`: the current presence of the watched users (privacy applied).' },
  ),
);
export const UserUpdateMessage = named(
  'UserUpdateMessage',
  Type.Object(
    { type: Type.Literal('user.update'), user: UserPresence },
    { description: "A watched user's presence changed (privacy applied)." },
  ),
);
export const AckMessage = named(
  'AckMessage',
  Type.Object(
    {
      type: Type.Literal('ack'),
      ref: Ref,
      self: Type.Optional(refine(SelfPresence, { description: 'After `status` and `meta`: the own presence as stored.' })),
      channelMeta: Type.Optional(refine(Meta, { description: "After `channel.meta`: the member's channel meta as stored." })),
      watching: Type.Optional(count('After `watch` and `unwatch`: how many users the session watches.')),
    },
    { description: 'A command with a `ref` succeeded; some commands add data.' },
  ),
);

export const ErrorCode = named(
  'ErrorCode',
  Type.Union(
    ERROR_CODES.map((code) => Type.Literal(code)),
    { description: 'Stable error code; docs/errors.md explains each.' },
  ) as unknown as TUnion<TLiteral<ErrorCodeName>[]>,
);

export const ErrorMessage = named(
  'ErrorMessage',
  Type.Object(
    {
      type: Type.Literal('error'),
      ref: Type.Optional(refine(Ref, { description: 'The ref of the refused command, when it had a usable one.' })),
      code: ErrorCode,
      message: Type.String({ description: 'For humans; may change between versions.' }),
    },
    { description: 'A command was refused, or the connection is about to close.' },
  ),
);
export const PongMessage = named(
  'PongMessage',
  Type.Object({ type: Type.Literal('pong'), ref: Type.Optional(Ref), serverTime: Timestamp }, { description: 'Answer to `ping`.' }),
);
export const SessionTokenMessage = named(
  'SessionTokenMessage',
  Type.Object(
    {
      type: Type.Literal('session.token'),
      sessionToken: Type.String({ description: 'Replaces `welcome.sessionToken` (and any earlier renewal).' }),
      expiresAt: refine(Timestamp, { description: 'When this token stops being accepted, unless renewed again before.' }),
    },
    { description: 'A renewed session token, sent before the previous one expires. Clients that do not know it ignore it.' },
  ),
);

export const ServerMessage = named(
  'ServerMessage',
  Type.Union([
    WelcomeMessage,
    PresenceSyncMessage,
    PresenceJoinMessage,
    PresenceLeaveMessage,
    PresenceUpdateMessage,
    PresenceOccupancyMessage,
    PresencePageMessage,
    TypingMessage,
    UserSyncMessage,
    UserUpdateMessage,
    AckMessage,
    ErrorMessage,
    PongMessage,
    SessionTokenMessage,
  ]),
);

export const ServerFrame = named(
  'ServerFrame',
  Type.Union([ServerMessage, Type.Array(ServerMessage)], {
    description: 'A frame from the server: one message, or a batch of them as an array (clients must accept both).',
  }),
);

// ---------------------------------------------------------------------------------------------
// HTTP API bodies
// ---------------------------------------------------------------------------------------------

export const ErrorResponse = named(
  'ErrorResponse',
  Type.Object(
    {
      error: Type.Object({
        code: ErrorCode,
        message: Type.String({ description: 'For humans; may change between versions.' }),
      }),
    },
    { description: 'Every HTTP error: the same codes as the WebSocket `error` frames.' },
  ),
);

export const ChannelPresenceResponse = named('ChannelPresenceResponse', Type.Object(channelPageFields));

export const UpdatePresenceRequest = named(
  'UpdatePresenceRequest',
  Type.Object(
    {
      userId: Type.Optional(
        refine(UserId, { description: 'Whose presence to change: required with the API key; with a user token, absent or the own id.' }),
      ),
      ...StatusFields,
      status: Type.Optional(
        literals(['online', 'away', 'busy', 'invisible', 'offline'], {
          description: '`online` clears the manual status; `away`, `busy`, `invisible` set it; `offline` ends every session of the user at once.',
        }),
      ),
      meta: Type.Optional(refine(Meta, { [EXPECTED]: 'a JSON object' })),
      contacts: Type.Optional(
        Type.Array(UserId, {
          description: "The user's contacts (who may see them under `contacts` visibility); API key only.",
          [EXPECTED]: 'an array of user ids',
        } as SchemaOptions),
      ),
    },
    { additionalProperties: false, description: 'A change to one user presence; unknown fields are refused.' },
  ),
);

export const UpdatePresenceResponse = named(
  'UpdatePresenceResponse',
  Type.Object({ user: refine(SelfPresence, { description: 'The presence as stored after the update.' }) }),
);

export const UserPresenceResponse = named('UserPresenceResponse', Type.Object({ user: UserPresence }));

export const QueryPresenceRequest = named(
  'QueryPresenceRequest',
  Type.Object({
    userIds: Type.Array(UserId, {
      description: 'At most 1000 (configurable; TOO_MANY_USERS) user ids.',
      [EXPECTED]: 'an array of user ids',
    } as SchemaOptions),
  }),
);

export const QueryPresenceResponse = named(
  'QueryPresenceResponse',
  Type.Object({ users: Type.Array(UserPresence, { description: 'In the order asked, privacy applied.' }) }),
);

export const UserChannel = named(
  'UserChannel',
  Type.Object(
    {
      channel: ChannelName,
      joinedAt: refine(Timestamp, {
        description: 'When the user last became visible in the channel: their first join, or their last return from invisible if later (as `Member.joinedAt`).',
      }),
      channelMeta: refine(Meta, { description: "The user's meta in this channel (cursor, mode, …)." }),
    },
    { description: 'One channel a user is a member of.' },
  ),
);

export const UserChannelsResponse = named(
  'UserChannelsResponse',
  Type.Object({
    userId: UserId,
    channels: Type.Array(UserChannel, {
      description: 'The channels the user is a visible member of, by channel name; empty when the user is offline or invisible.',
    }),
  }),
);

export const OnlineUsersResponse = named(
  'OnlineUsersResponse',
  Type.Object({
    count: count('Users others see as present in the whole list (not only this page); invisible users are not counted.'),
    users: Type.Array(UserPresence, { description: 'One page of present users, by user id.' }),
    nextCursor: Type.Optional(Type.String({ description: 'Pass as `cursor` to get the next page; absent on the last page.' })),
  }),
);

const ChannelEntry = Type.Union(
  [
    ChannelName,
    Type.Object(
      { name: ChannelName, meta: Type.Optional(refine(Meta, { description: 'Merged into the member meta, as `join` does (`null` removes a key).' })) },
      { description: 'A channel with member meta to merge.' },
    ),
  ],
  { [EXPECTED]: 'a channel name or {"name", "meta"}' } as SchemaOptions,
);

export const HeartbeatRequest = named(
  'HeartbeatRequest',
  Type.Object(
    {
      sessionId: Type.Optional(
        Type.String({ description: 'The `sessionId` of the previous answer; absent on the first heartbeat. An unknown or ended id starts a new session.' }),
      ),
      channels: Type.Optional(
        Type.Array(ChannelEntry, {
          description:
            'The complete set of channels this session is in after this heartbeat: channels not listed are left, new ones joined. Absent: unchanged. At most `maxChannelsPerSession` (TOO_MANY_CHANNELS).',
          [EXPECTED]: 'an array of channel names or {"name", "meta"} objects',
        } as SchemaOptions),
      ),
      device: Type.Optional(Type.String({ description: 'Device kind shown in `devices` (as `?device=` on the WebSocket); read when the session is opened or resumed.' })),
      activity: Type.Optional(
        literals(['active', 'idle'], {
          description: '`active`: the user did something since the last heartbeat (the `activity` command); `idle`: the client reports the user idle (the `idle` command). Absent: neither; the idle timeout runs on.',
        }),
      ),
      ack: Type.Optional(
        Type.Record(Type.String(), Type.Integer({ minimum: 0 }), {
          description:
            'For each joined channel, the `seq` of the last event the client applied. A channel left out gets a fresh `presence.sync`.',
          [EXPECTED]: 'an object of channel name to seq',
        } as SchemaOptions),
      ),
      typing: Type.Optional(
        Type.Record(Type.String(), Type.Boolean(), {
          description: 'Typing per joined channel, as the `typing` command: `true` starts or refreshes it, `false` ends it.',
          [EXPECTED]: 'an object of channel name to boolean',
        } as SchemaOptions),
      ),
    },
    { description: 'One heartbeat of an HTTP session. Fields it does not define are ignored.' },
  ),
);

export const HeartbeatResponse = named(
  'HeartbeatResponse',
  Type.Object(
    {
      sessionId: Type.String({ description: 'Send it with the next heartbeat.' }),
      sessionToken: Type.String({ description: 'The capability for `POST /realtime/disconnect` (the unload beacon); renewed with every heartbeat.' }),
      intervalMs: count('Send the next heartbeat within this many ms; two missed intervals end the session (then the offline delay runs).'),
      events: Type.Array(ServerMessage, {
        description:
          'Protocol v1 messages since the last heartbeat: `welcome` when the session was opened, resumed or moved to this node, then for each joined channel the `presence.*` events after the acknowledged `seq`, or one `presence.sync` when this node cannot give them.',
      }),
      errors: Type.Optional(
        Type.Array(
          Type.Object({ channel: ChannelName, code: ErrorCode, message: Type.String() }),
          { description: 'Channel changes and typing signals that were refused (the rest of the heartbeat applied).' },
        ),
      ),
    },
    { description: 'The answer to one heartbeat.' },
  ),
);

export const DisconnectRequest = named(
  'DisconnectRequest',
  Type.Object(
    { sessionToken: Type.String({ description: '`welcome.sessionToken`, its latest `session.token` renewal, or the last heartbeat answer\'s.' }) },
    { description: 'The unload beacon: accepted with any Content-Type (`text/plain` as `navigator.sendBeacon` sends a string).' },
  ),
);

export const AdminNodeRow = named(
  'AdminNodeRow',
  Type.Object(
    {
      nodeId: Type.String(),
      self: Type.Boolean({ description: 'True for the node that answered.' }),
      lease: literals(['live', 'expired'], {
        description: '`live`: the node holds a lease; `expired`: its lease is gone and its sessions are about to be reaped.',
      }),
      sessions: count('Sessions the node holds, including those inside their offline delay.'),
      connections: count('Sessions with an open socket.'),
      users: count('Distinct users others see as present through a session on this node (invisible users are not counted).'),
    },
    { description: "One node of a cluster, as this node's replica of the shared state sees it." },
  ),
);

export const AdminWebhookTarget = named(
  'AdminWebhookTarget',
  Type.Object(
    {
      url: Type.String({ description: 'The URL without its query string (which may carry a token).' }),
      backlog: count('Events waiting for this URL, the ones being sent or waiting for a retry included.'),
      oldestPendingAt: Type.Union([Timestamp, Type.Null()], { description: 'When the oldest waiting event was queued; `null` when none waits.' }),
      delivered: count('Events the URL accepted (2xx) since start.'),
      failedAttempts: count('Attempts that failed (network error, timeout, or a non-2xx answer) since start.'),
      deadLetters: count('Events given up on (retries exhausted, or a 4xx that is not retried) since this node started.'),
      dropped: count('Events dropped because the backlog was full, since start.'),
      recentDeadLetters: Type.Array(
        Type.Object({
          id: Type.String(),
          type: Type.String(),
          reason: Type.String({ description: 'The last failure, e.g. `http 400` or `timeout`.' }),
          attempts: count('Attempts made.'),
          at: refine(Timestamp, { description: 'When it was given up on.' }),
        }),
        { description: 'The last five dead letters, newest first (with a data directory, also those of earlier runs).' },
      ),
    },
    { description: 'One webhook URL: its queue and what became of its events.' },
  ),
);

export const AdminStats = named(
  'AdminStats',
  Type.Object(
    {
      time: refine(Timestamp, { description: 'When the figures were taken.' }),
      nodeId: Type.Union([Type.String(), Type.Null()], { description: "The answering node's id in a cluster; `null` on a single node." }),
      connections: count('WebSocket connections with a live session on this node.'),
      sessions: count('Sessions on this node, including those inside their offline delay.'),
      onlineUsers: count('Users others see as present (cluster-wide in a cluster); invisible users are not counted.'),
      channels: count('Channels with at least one visible member (cluster-wide in a cluster).'),
      topChannels: Type.Array(Type.Object({ channel: ChannelName, members: count('Visible members.') }), {
        description: 'The busiest channels by visible members, most first (ties by name).',
      }),
      rates: Type.Union(
        [
          Type.Object({
            windowSeconds: Type.Number({ minimum: 0 }),
            eventsInPerSecond: Type.Number({ minimum: 0 }),
            eventsOutPerSecond: Type.Number({ minimum: 0 }),
          }),
          Type.Null(),
        ],
        {
          description:
            'Inbound commands and outbound messages per second on this node, averaged over `windowSeconds` (the time since the oldest earlier request to this endpoint within the last 10 s); `null` on the first request.',
        },
      ),
      totals: Type.Object(
        {
          eventsIn: count('Inbound commands since start.'),
          eventsOut: count('Outbound messages since start.'),
          errors: Type.Record(Type.String(), count('Errors of this code.'), {
            description:
              'WebSocket errors since start by error code, as `presence_errors_total` (codes never counted are left out). A client computes error rates from two successive answers.',
          }),
        },
        { description: 'Counter totals since the start of this node, the base of `rates`.' },
      ),
      process: Type.Object(
        {
          residentMemoryBytes: count('Resident set size of the process.'),
          heapUsedBytes: count('JavaScript heap in use.'),
          heapTotalBytes: count('JavaScript heap reserved.'),
          outboundBufferBytes: count('Bytes queued on this node\'s WebSockets but not yet taken by the kernel, over all connections (as `presence_outbound_buffer_bytes`).'),
          outboundBufferMaxBytes: count('The same on the connection with the most (as `presence_outbound_buffer_max_bytes`).'),
          eventLoopLag: Type.Union(
            [
              Type.Object({
                windowSeconds: Type.Number({ minimum: 0 }),
                p99Ms: Type.Number({ minimum: 0 }),
                maxMs: Type.Number({ minimum: 0 }),
              }),
              Type.Null(),
            ],
            {
              description:
                'Event-loop lag over the last `windowSeconds` (10 s, less while sampling has not run that long): how much later than due a timer running every 20 ms ran, its 99th percentile and maximum in milliseconds. `null` on the first request: sampling starts then, and stops after a minute without requests.',
            },
          ),
        },
        { description: "The answering node's process and sockets (other nodes' are not shared through the cluster)." },
      ),
      cluster: Type.Union([Type.Object({ ready: Type.Boolean(), nodes: Type.Array(AdminNodeRow) }), Type.Null()], {
        description: 'Set in a cluster: one row per node (this one first, then by id).',
      }),
      webhooks: Type.Union([Type.Object({ targets: Type.Array(AdminWebhookTarget) }), Type.Null()], {
        description: 'Set when webhooks are configured (`PRESENCE_WEBHOOK_URLS`): one row per URL, in the configured order.',
      }),
    },
    { description: 'Figures for the operations dashboard.' },
  ),
);

// ---------------------------------------------------------------------------------------------
// Webhooks (server → the application's backend, one event per POST)
// ---------------------------------------------------------------------------------------------

const webhookUserFields = {
  userId: UserId,
  user: refine(UserPresence, {
    description: 'The user as everyone may see them after the change (an invisible user is `offline`); `visibility` is not applied: the receiver is a trusted backend.',
  }),
};

const webhookLastSeen = Type.Union([Timestamp, Type.Null()], {
  description: 'When the user was last seen (frozen at the moment they went invisible); `null` if never.',
});

function webhookEvent<const T extends string, D extends TSchema>(type: T, data: D, description: string) {
  const name = `Webhook${type
    .split(/[._]/)
    .map((part) => part[0].toUpperCase() + part.slice(1))
    .join('')}Event`;
  return named(
    name,
    Type.Object(
      {
        id: Type.String({
          description:
            'Names the change, not the delivery: the same on every attempt and on every node. Receivers deduplicate by it (delivery is at least once).',
        }),
        type: Type.Literal(type),
        createdAt: refine(Timestamp, { description: 'When the change happened.' }),
        data,
      },
      { description },
    ),
  );
}

export const WebhookUserOnlineEvent = webhookEvent('user.online', Type.Object(webhookUserFields), 'The user came into sight: first session, back from invisible.');
export const WebhookUserOfflineEvent = webhookEvent(
  'user.offline',
  Type.Object({ ...webhookUserFields, lastSeen: webhookLastSeen }),
  'The user left sight: last session ended (after the offline delay), logout, or went invisible (indistinguishable).',
);
export const WebhookUserStatusEvent = webhookEvent(
  'user.status',
  Type.Object(webhookUserFields),
  'The status others see changed: manual status, custom state, message, expiry, idle/active, devices (meta may have changed with it).',
);
export const WebhookUserMetaEvent = webhookEvent('user.meta', Type.Object(webhookUserFields), "Only the user's meta (name, avatar, …) changed.");
export const WebhookChannelMemberJoinedEvent = webhookEvent(
  'channel.member_joined',
  Type.Object({ channel: ChannelName, userId: UserId, member: Member }),
  'A user became a visible member of the channel: first session joined, or came into sight while joined.',
);
export const WebhookChannelMemberLeftEvent = webhookEvent(
  'channel.member_left',
  Type.Object({ channel: ChannelName, userId: UserId, lastSeen: webhookLastSeen }),
  'A visible member left: last session left or ended, or the user went out of sight.',
);
export const WebhookChannelMemberUpdatedEvent = webhookEvent(
  'channel.member_updated',
  Type.Object({
    channel: ChannelName,
    userId: UserId,
    member: Member,
    change: literals(['presence', 'channel_meta'], {
      description: '`presence`: the user changed (the same change as the `user.status` or `user.meta` beside it); `channel_meta`: their meta in this channel.',
    }),
  }),
  'A member changed (opt-in: not in the default event set).',
);
export const WebhookChannelOccupiedEvent = webhookEvent(
  'channel.occupied',
  Type.Object({ channel: ChannelName }),
  'The channel got its first visible member (right after that member’s `channel.member_joined`).',
);
export const WebhookChannelVacatedEvent = webhookEvent(
  'channel.vacated',
  Type.Object({ channel: ChannelName }),
  'The channel’s last visible member left (right after that member’s `channel.member_left`).',
);
export const WebhookTypingStartedEvent = webhookEvent(
  'typing.started',
  Type.Object({ channel: ChannelName, userId: UserId }),
  'A member started typing (opt-in). Never for an invisible user.',
);
export const WebhookTypingStoppedEvent = webhookEvent(
  'typing.stopped',
  Type.Object({ channel: ChannelName, userId: UserId }),
  'A member stopped typing: `typing:false`, a leave, or the typing timeout (opt-in).',
);

/** Every webhook event, by its `type`. */
export const WEBHOOK_EVENTS = {
  'user.online': WebhookUserOnlineEvent,
  'user.offline': WebhookUserOfflineEvent,
  'user.status': WebhookUserStatusEvent,
  'user.meta': WebhookUserMetaEvent,
  'channel.member_joined': WebhookChannelMemberJoinedEvent,
  'channel.member_left': WebhookChannelMemberLeftEvent,
  'channel.member_updated': WebhookChannelMemberUpdatedEvent,
  'channel.occupied': WebhookChannelOccupiedEvent,
  'channel.vacated': WebhookChannelVacatedEvent,
  'typing.started': WebhookTypingStartedEvent,
  'typing.stopped': WebhookTypingStoppedEvent,
};

export const WebhookEvent = named(
  'WebhookEvent',
  Type.Union(
    [
      WebhookUserOnlineEvent,
      WebhookUserOfflineEvent,
      WebhookUserStatusEvent,
      WebhookUserMetaEvent,
      WebhookChannelMemberJoinedEvent,
      WebhookChannelMemberLeftEvent,
      WebhookChannelMemberUpdatedEvent,
      WebhookChannelOccupiedEvent,
      WebhookChannelVacatedEvent,
      WebhookTypingStartedEvent,
      WebhookTypingStoppedEvent,
    ],
    {
      description:
        'The body of one webhook POST, signed in the `Presence-Signature` header. Unknown fields may be added later; receivers must ignore them.',
    },
  ),
);

export const HealthResponse = named('HealthResponse', Type.Object({ status: Type.Literal('ok') }));
export const ReadyResponse = named('ReadyResponse', Type.Object({ status: Type.Literal('ready') }));

// ---------------------------------------------------------------------------------------------
// Documents
// ---------------------------------------------------------------------------------------------

/** The name a schema was given for `$defs` / `components.schemas`, if any. */
export function schemaName(schema: TSchema): string | undefined {
  return (schema as TSchema & Annotated)[SCHEMA_NAME];
}

/** The wording for error messages set on a schema, if any. */
export function expectedOf(schema: TSchema): string | undefined {
  return (schema as TSchema & Annotated)[EXPECTED];
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/**
 * Plain JSON Schema for `schema`: named schemas nested in it become `$ref`s to `refPrefix + name`
 * (collected in `defs`), unions of string constants become `enum`s, TypeBox's symbols are dropped.
 */
export function toJsonSchema(schema: TSchema, refPrefix: string, defs: Map<string, Json>, root = true): Json {
  const name = schemaName(schema);
  if (name !== undefined && !root) {
    if (!defs.has(name)) {
      defs.set(name, null); // placeholder: a schema may refer to itself through others
      defs.set(name, toJsonSchema(stripped(DEFINITIONS.get(name) ?? schema), refPrefix, defs, true));
    }
    const ref: { [key: string]: Json } = { $ref: refPrefix + name };
    // A use may describe itself differently from the definition (2020-12 allows siblings of $ref).
    const base = DEFINITIONS.get(name) ?? schema;
    if (schema.description !== undefined && schema.description !== base.description) ref.description = schema.description;
    return ref;
  }
  const out: { [key: string]: Json } = {};
  for (const [key, value] of Object.entries(schema)) {
    if (value === undefined) continue;
    if (key === 'properties') {
      const properties: { [key: string]: Json } = {};
      for (const [prop, sub] of Object.entries(value as Record<string, TSchema>)) properties[prop] = toJsonSchema(sub, refPrefix, defs, false);
      out.properties = properties;
    } else if (key === 'anyOf' || key === 'allOf' || key === 'oneOf') {
      out[key] = (value as TSchema[]).map((sub) => toJsonSchema(sub, refPrefix, defs, false));
    } else if ((key === 'items' || key === 'additionalProperties' || key === 'not') && typeof value === 'object') {
      out[key] = toJsonSchema(value as TSchema, refPrefix, defs, false);
    } else if (key === 'patternProperties') {
      const patterns: { [key: string]: Json } = {};
      for (const [pattern, sub] of Object.entries(value as Record<string, TSchema>)) patterns[pattern] = toJsonSchema(sub, refPrefix, defs, false);
      out.patternProperties = patterns;
    } else {
      out[key] = value as Json;
    }
  }
  return simplifyRecord(simplifyEnum(out));
}

/** TypeBox's string-keyed records (`patternProperties` of any key) as `additionalProperties`. */
function simplifyRecord(out: { [key: string]: Json }): { [key: string]: Json } {
  const patterns = out.patternProperties;
  if (patterns === null || typeof patterns !== 'object' || Array.isArray(patterns)) return out;
  const keys = Object.keys(patterns);
  if (keys.length !== 1 || keys[0] !== '^(.*)$') return out;
  const { patternProperties: _, ...rest } = out;
  return { ...rest, additionalProperties: patterns[keys[0]] };
}

/** The schema without its name, so it is emitted in full as the definition. */
function stripped(schema: TSchema): TSchema {
  const copy = { ...schema } as TSchema & Annotated;
  delete copy[SCHEMA_NAME];
  return copy;
}

/** `anyOf` of string constants (TypeBox's literal unions) as the shorter `enum`. */
function simplifyEnum(out: { [key: string]: Json }): { [key: string]: Json } {
  const anyOf = out.anyOf;
  if (!Array.isArray(anyOf) || anyOf.length === 0) return out;
  const values: string[] = [];
  for (const member of anyOf) {
    if (member === null || typeof member !== 'object' || Array.isArray(member)) return out;
    const keys = Object.keys(member);
    if (typeof member.const !== 'string' || keys.some((k) => k !== 'const' && k !== 'type')) return out;
    values.push(member.const);
  }
  const { anyOf: _, ...rest } = out;
  return { type: 'string', enum: values, ...rest };
}

/** `$id` of the protocol's JSON Schema document (a name, not a location). */
export const PROTOCOL_SCHEMA_ID = 'urn:presence:schema:protocol-v1';

/**
 * The JSON Schema (2020-12) of wire protocol v1: `$defs` holds every message and the objects they
 * carry; the document itself matches any frame in either direction.
 */
export function protocolJsonSchema(): Record<string, unknown> {
  const defs = new Map<string, Json>();
  const client = toJsonSchema(ClientMessage, '#/$defs/', defs, false);
  const server = toJsonSchema(ServerFrame, '#/$defs/', defs, false);
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $id: PROTOCOL_SCHEMA_ID,
    title: 'Presence wire protocol v1',
    description:
      'Every WebSocket frame of protocol v1: a client frame is one ClientMessage, a server frame is a ServerFrame. Generated from packages/protocol/src/schema.ts (npm run schema); docs/protocol.md explains the protocol.',
    anyOf: [client, server],
    $defs: Object.fromEntries([...defs.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
  };
}

export type { Static };
