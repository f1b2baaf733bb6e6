// schema.graphql checked with @graphql-eslint: the Relay connection rules
// third-party clients rely on, and a description on every type and field.
// The test copies the schema here as schema.lint.graphql (ESLint only
// lints files under this folder).
import graphql from '@graphql-eslint/eslint-plugin';

export default [
  {
    files: ['schema.lint.graphql'],
    languageOptions: {
      parser: graphql.parser,
      parserOptions: { graphQLConfig: { schema: 'schema.lint.graphql' } },
    },
    plugins: { '@graphql-eslint': graphql },
    rules: {
      '@graphql-eslint/relay-connection-types': 'error',
      '@graphql-eslint/relay-edge-types': [
        'error',
        { shouldImplementNode: false, listTypeCanWrapOnlyEdgeType: false },
      ],
      '@graphql-eslint/relay-page-info': 'error',
      '@graphql-eslint/relay-arguments': ['error', { includeBoth: false }],
      // Every type and field is documented for third-party clients.
      '@graphql-eslint/require-description': [
        'error',
        {
          types: true,
          FieldDefinition: true,
          EnumValueDefinition: false,
          InputValueDefinition: false,
          OperationDefinition: false,
        },
      ],
    },
  },
];
