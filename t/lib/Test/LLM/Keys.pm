package Test::LLM::Keys;

# The plaintext client keys whose digests are in t/lib/keys.txt, and the
# http-level configuration every gateway test starts from.

use strict;
use warnings;

use Cwd ();
use File::Basename ();

our $KEY_FILE = Cwd::abs_path(File::Basename::dirname(__FILE__) . '/../../keys.txt');

# account alice, tier small (two keys of one account)
our $ALICE  = 'sk-llm-Y4-4Ri3zip6gBBWf45IsEZxlo1Kv0YU1h4AFDfO4tgM';
our $ALICE2 = 'sk-llm-TMhBy7Avtl9SzAFwB5fwNJYxHJ0jCOqlwJHvGTA1Cks';
# account carol, no tier on the key line: the location's default
our $CAROL  = 'sk-llm-axzOEUUDUmExCU5Gx8a1nHBX3pTIoJzT5tRmgQVa-kk';
# account dave, tier quota
our $DAVE   = 'sk-llm-MENzt96cpYKAu33w4h1WpODBJOqtsWV8znXxWVT89as';
# account eve, expired in 2020
our $EVE    = 'sk-llm-2BRercXuIWMkB_w7gly1Tob4heC0LE_zQydZl-Zj6IA';
# account frank, no tier, expires in 2999
our $FRANK  = 'sk-llm-V3pUw66tdE28Fd-YgRvjp54k0yxviFX3op2YROzAZiM';

# keys known to Redis only (t/093, t/095, t/106), not in keys.txt: name =>
# [key, digest] (digests from Python's hashlib.blake2b)
our %REDIS_ONLY = (
    zed  => ['sk-llm-FW7Uteno9NpyET7DnWSTZSEl3KE4Owikqr-1OSPYkxs',
             '6ae2d7b311a021ade6cc770fa3d39f921d48d12c03fa70470088c65113bc6e1e'],
    yola => ['sk-llm-N09mm8gAAJyH4zUTqzaZcUSV2pbqOb3E4_7qDfWJDOA',
             '408c3c0de71689723991b1c538d10921bd6369687f67ebacca95339ffa04e7ef'],
    xavi => ['sk-llm-RJVQXSkLR9zZxabrDo0jPGWClf-h2-31e0IZbNrxm9Q',
             'd7a9a92f8c4164d28c3ce55223c08314a11b99aa8ee949ec3604c3115e6265d4'],
    wren => ['sk-llm-Lc7jbidj4KwgV36akl1fkn584MKAIrUh5KDExz6v94g',
             'de22dd2bcc91594fee784180dfd39fc4caeb615e001580e52cebe2f908564228'],
    vera => ['sk-llm-1XBy3YwatYZpv6ZR_0lCFAddGA4DDijJ8xcJiqL2eK8',
             '4c9381a09e480a167204e1abf426dc4d3b37fbafc5cdc3fd1349f7c5f2ab9434'],
    uma  => ['sk-llm-WcA4dD3BfrFO-Rc8sC7rFPtfM-p3x52yQuKn1leybBk',
             'e7b5c5a7dbe6b2f525106477751f7b56b5e175978ab8442fa5bddc0381b2f07e'],
);

# tiers named by keys.txt must exist in every configuration that loads it
our $TIERS = <<"_EOC_";
    llm_zone llm:1m;
    llm_tier small requests=3/m;
    llm_tier quota requests=2/d requests=100/m;
    llm_key_file $KEY_FILE;
_EOC_

1;
