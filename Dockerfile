# The Presence server as an image: docs/operations.md#docker.
#   docker build -t presence .
#   docker run -p 8080:8080 -e PRESENCE_JWT_SECRET=… -e PRESENCE_API_KEY=… presence

# Build: the whole workspace from its lockfile, then the packed server (pages and Lua scripts
# included) with a lockfile that pins the same dependency versions.
FROM node:20-bookworm-slim AS build
WORKDIR /repo
COPY package.json package-lock.json tsconfig.base.json ./
COPY bench/package.json bench/
COPY packages/ packages/
RUN npm ci --no-audit --no-fund
RUN npm run build && npm run pack:server -- /release

# Run: Node and the server's production dependencies, nothing of the workspace.
FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /release/ ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force \
  && mkdir -p /var/lib/presence && chown node:node /var/lib/presence
USER node
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s \
  CMD ["node", "-e", "fetch(`http://127.0.0.1:${process.env.PORT || 8080}/readyz`).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
CMD ["node", "node_modules/@presence/server/dist/bin/presence.js"]
