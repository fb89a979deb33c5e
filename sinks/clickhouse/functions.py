"""The functions an analyst's query may call: an allow-list, not a deny-list.

Lowercased ClickHouse names, aliases included. Aggregates may carry combinators
(``AGGREGATE_COMBINATORS``: countIf, sumMap, uniqExactState, quantilesMerge, avgOrNull, ...).
Nothing here reads server state, settings, files, the network, dictionaries or other tables,
and nothing sleeps; ``SERVER_STATE_FUNCTIONS`` and ``EXTERNAL_FUNCTIONS`` name what is refused
on purpose, so that the guard (``sinks/clickhouse/query.py``) also refuses their names where
ClickHouse calls them without parentheses or as table functions.
"""

from __future__ import annotations

import functools

MAX_NAME = 128


def names(text: str) -> frozenset[str]:
    return frozenset(name.lower() for name in text.split())


def _variants(bases: str, suffixes: str) -> str:
    return " ".join(b + s for b in bases.split() for s in ("", *suffixes.split()))


# -- functions an analyst may call (lowercased; ClickHouse names, aliases included) -----------
# Aggregates may carry combinators (AGGREGATE_COMBINATORS): countIf, sumMap, uniqExactState,
# quantilesMerge, avgOrNull, sumIfOrNull, ...
AGGREGATES = names("""
    count sum avg min max any anylast anyheavy any_value first_value last_value argmin argmax
    argandmin argandmax max_by min_by avgweighted sumkahan sumwithoverflow sumcount deltasum
    deltasumtimestamp uniq uniqexact uniqcombined uniqcombined64 uniqhll12 uniqupto
    grouparray grouparraylast grouparraysample grouparraysorted grouparrayinsertat
    grouparrayintersect grouparraymovingavg grouparraymovingsum groupuniqarray groupconcat
    group_concat string_agg array_agg array_concat_agg groupbitand groupbitor groupbitxor
    bit_and bit_or bit_xor topk topkweighted approx_top_k approx_top_count approx_top_sum
    stddevpop stddevsamp stddevpopstable stddevsampstable varpop varsamp varpopstable
    varsampstable std stddev stddev_pop stddev_samp var_pop var_samp covarpop covarsamp
    covarpopstable covarsampstable covar_pop covar_samp corr corrstable corrmatrix
    covarpopmatrix covarsampmatrix skewpop skewsamp kurtpop kurtsamp entropy histogram
    boundingratio simplelinearregression rankcorr retention windowfunnel sequencematch
    sequencecount sequencematchevents maxintersections maxintersectionsposition
    intervallengthsum exponentialmovingaverage exponentialtimedecayedavg
    exponentialtimedecayedcount exponentialtimedecayedmax exponentialtimedecayedsum
    singlevalueornull sparkbar largesttrianglethreebuckets lttb nonnegativederivative
    categoricalinformationvalue contingency cramersv cramersvbiascorrected theilsu
    studentttest welchttest mannwhitneyutest kolmogorovsmirnovtest meanztest
    analysisofvariance anova
    row_number rank dense_rank denserank percent_rank percentrank cume_dist ntile lag lead
    laginframe leadinframe nth_value
""") | names(
    _variants(
        "quantile quantiles median",
        "exact exactlow exacthigh exactweighted exactweightedinterpolated interpolatedweighted"
        " timing timingweighted tdigest tdigestweighted bfloat16 bfloat16weighted deterministic"
        " dd gk",
    )
    + " "
    + _variants("quantile quantiles", "exactexclusive exactinclusive prometheushistogram")
)
AGGREGATE_COMBINATORS = (
    "simplestate", "mergestate", "ordefault", "resample", "distinct", "foreach", "argmin",
    "argmax", "ornull", "state", "merge", "array", "tuple", "null", "map", "if",
)  # fmt: skip

_TYPES = (
    "int8 int16 int32 int64 int128 int256 uint8 uint16 uint32 uint64 uint128 uint256 float32"
    " float64 decimal32 decimal64 decimal128 decimal256 date date32 datetime datetime64 uuid"
    " ipv4 ipv6"
)
SCALARS = (
    names("""
    plus minus multiply divide divideornull intdiv intdivorzero intdivornull modulo
    moduloorzero moduloornull mod positivemodulo positive_modulo pmod negate abs gcd lcm max2
    min2 midpoint isfinite isinfinite isnan ifnotfinite byteswap avg2 dividedecimal
    multiplydecimal equals notequals less greater lessorequals greaterorequals isdistinctfrom
    isnotdistinctfrom and or not xor
    if multiif greatest least clamp coalesce ifnull nullif isnull isnotnull isnullable
    iszeroornull assumenotnull tonullable firstnondefault
    exp exp2 exp10 log ln log2 log10 log1p sqrt cbrt pow power erf erfc lgamma tgamma sin cos
    tan asin acos atan atan2 sinh cosh tanh asinh acosh atanh hypot pi e sign degrees radians
    sigmoid factorial intexp2 intexp10 widthbucket width_bucket
    round roundbankers floor ceil ceiling trunc truncate roundtoexp2 roundduration roundage
    rounddown
    bitand bitor bitxor bitnot bitshiftleft bitshiftright bitrotateleft bitrotateright bittest
    bittestall bittestany bitcount bithammingdistance bitslice
    cast accuratecast accuratecastornull accuratecastordefault tostring tofixedstring
    tostringcuttozero tolowcardinality tobool todatetime32 todecimalstring tointerval tointervalyear
    tointervalquarter tointervalmonth tointervalweek tointervalday tointervalhour
    tointervalminute tointervalsecond tointervalmillisecond tointervalmicrosecond
    tointervalnanosecond reinterpret reinterpretasstring reinterpretasfixedstring
    reinterpretasuint8 reinterpretasuint16 reinterpretasuint32 reinterpretasuint64
    reinterpretasint8 reinterpretasint16 reinterpretasint32 reinterpretasint64
    reinterpretasfloat32 reinterpretasfloat64 reinterpretasdate reinterpretasdatetime
    reinterpretasuuid fromunixtimestamp from_unixtime fromunixtimestamp64second
    fromunixtimestamp64milli fromunixtimestamp64micro fromunixtimestamp64nano
    tounixtimestamp tounixtimestamp64second tounixtimestamp64milli tounixtimestamp64micro
    tounixtimestamp64nano parsedatetime parsedatetimeornull parsedatetimeorzero
    parsedatetime64 parsedatetime64ornull parsedatetime64orzero parsedatetimebesteffort
    parsedatetimebesteffortornull parsedatetimebesteffortorzero parsedatetimebesteffortus
    parsedatetimebesteffortusornull parsedatetimebesteffortusorzero parsedatetime64besteffort
    parsedatetime64besteffortornull parsedatetime64besteffortorzero
    parsedatetime32besteffort parsedatetimeinjodasyntax parsedatetimeinjodasyntaxornull
    str_to_date
    now now64 today yesterday curdate current_date current_timestamp localtime
    localtimestamp totimezone timezoneof timezoneoffset toyear toquarter tomonth todayofyear
    todayofmonth todayofweek tohour tominute tosecond tomillisecond tomicrosecond
    tonanosecond toisoyear toisoweek toweek toyearweek tomonday todaysinmonth
    tolastdayofmonth tolastdayofweek tostartofyear tostartofisoyear tostartofquarter
    tostartofmonth tostartofweek tostartofday tostartofhour tostartofminute tostartofsecond
    tostartofmillisecond tostartofmicrosecond tostartofnanosecond tostartoffiveminutes
    tostartoffiveminute tostartoftenminutes tostartoffifteenminutes tostartofinterval
    date_bin time_bucket torelativeyearnum torelativequarternum torelativemonthnum
    torelativeweeknum torelativedaynum torelativehournum torelativeminutenum
    torelativesecondnum toyyyymm toyyyymmdd toyyyymmddhhmmss yyyymmddtodate yyyymmddtodate32
    yyyymmddhhmmsstodatetime yyyymmddhhmmsstodatetime64 tomonthnumsinceepoch
    toyearnumsinceepoch makedate makedate32 makedatetime makedatetime64 datediff date_diff
    timestampdiff timestamp_diff age datetrunc date_trunc dateadd date_add datesub date_sub
    timestampadd timestamp_add timestampsub timestamp_sub adddate subdate addyears
    addquarters addmonths addweeks adddays addhours addminutes addseconds addmilliseconds
    addmicroseconds addnanoseconds subtractyears subtractquarters subtractmonths
    subtractweeks subtractdays subtracthours subtractminutes subtractseconds
    subtractmilliseconds subtractmicroseconds subtractnanoseconds addinterval
    subtractinterval addtupleofintervals subtracttupleofintervals formatdatetime date_format
    formatdatetimeinjodasyntax datename monthname timeslot timeslots changeyear changemonth
    changeday changehour changeminute changesecond tomodifiedjulianday
    tomodifiedjuliandayornull frommodifiedjulianday frommodifiedjuliandayornull
    todayssinceyearzero fromdayssinceyearzero to_days from_days utctimestamp utc_timestamp
    toutctimestamp fromutctimestamp to_utc_timestamp from_utc_timestamp timestamp year
    quarter month day dayofmonth dayofweek dayofyear hour minute second millisecond
    microsecond nanosecond week yearweek last_day extract
    length lengthutf8 char_length character_length octet_length empty notempty lower upper
    lcase ucase lowerutf8 upperutf8 initcap initcaputf8 reverse reverseutf8 concat
    concatwithseparator concat_ws concatassumeinjective substring substr mid substringutf8
    substringindex substringindexutf8 substring_index left right leftutf8 rightutf8 leftpad
    rightpad leftpadutf8 rightpadutf8 lpad rpad repeat space trim trimboth trimleft
    trimright ltrim rtrim startswith endswith startswithutf8 endswithutf8
    startswithcaseinsensitive endswithcaseinsensitive startswithcaseinsensitiveutf8
    endswithcaseinsensitiveutf8 appendtrailingcharifabsent base64encode base64decode
    trybase64decode base64urlencode base64urldecode trybase64urldecode base32encode
    base32decode base58encode base58decode to_base64 from_base64 hex unhex bin unbin char
    ascii crc32 crc32ieee crc64 tovalidutf8 isvalidutf8 isvalidascii isascii
    normalizeutf8nfc normalizeutf8nfd normalizeutf8nfkc normalizeutf8nfkd
    removediacriticsutf8 editdistance editdistanceutf8 levenshteindistance
    damerauLevenshteinDistance jarosimilarity jarowinklersimilarity stringjaccardindex
    stringjaccardindexutf8 bytehammingdistance mismatches soundex firstline
    encodexmlcomponent decodexmlcomponent decodehtmlcomponent extracttextfromhtml
    naturalsortkey natural_sort_key comparesubstrings casefoldutf8 format printf overlay
    overlayutf8 replace replaceall replaceone replaceregexpall replaceregexpone
    regexp_replace regexpquotemeta translate translateutf8
    position locate positionutf8 positioncaseinsensitive positioncaseinsensitiveutf8 instr
    match regexp_matches like notlike ilike notilike extractall extractgroups
    extractallgroupshorizontal extractallgroupsvertical extractallgroups regexpextract
    regexp_extract regexp_substr countsubstrings countsubstringscaseinsensitive
    countsubstringscaseinsensitiveutf8 countmatches countmatchescaseinsensitive hastoken
    hastokenornull hastokencaseinsensitive hastokencaseinsensitiveornull hassubsequence
    hassubsequencecaseinsensitive hassubsequenceutf8 hassubsequencecaseinsensitiveutf8
    multimatchany multimatchanyindex multimatchallindices
    splitbychar splitbystring splitbyregexp splitbywhitespace splitbynonalpha splitbyalpha
    alphatokens arraystringconcat array_to_string ngrams tokens reversebyseparator
    protocol domain domainwithoutwww domainrfc domainwithoutwwwrfc topleveldomain
    topleveldomainrfc firstsignificantsubdomain firstsignificantsubdomainrfc
    cuttofirstsignificantsubdomain cuttofirstsignificantsubdomainwithwww
    cuttofirstsignificantsubdomainrfc cuttofirstsignificantsubdomainwithwwwrfc port portrfc
    path pathfull querystring fragment querystringandfragment extracturlparameter
    extracturlparameters extracturlparameternames urlhierarchy urlpathhierarchy
    encodeurlcomponent decodeurlcomponent encodeurlformcomponent decodeurlformcomponent
    netloc cutwww cutquerystring cutfragment cutquerystringandfragment cuturlparameter
    jsonhas jsonlength jsontype jsonkey jsonarraylength json_array_length isvalidjson
    json_exists json_query json_value tojsonstring jsonmergepatch jsonallpaths
    jsonallpathswithtypes jsondynamicpaths jsondynamicpathswithtypes jsonshareddatapaths
    jsonshareddatapathswithtypes dynamictype dynamicelement simplejsonhas
    simplejsonextractuint simplejsonextractint simplejsonextractfloat simplejsonextractbool
    simplejsonextractraw simplejsonextractstring visitparamhas visitparamextractuint
    visitparamextractint visitparamextractfloat visitparamextractbool visitparamextractraw
    visitparamextractstring
    array has hasall hasany hassubstr notHas indexof indexofassumesorted countequal
    arrayelement arrayelementornull range arrayconcat arraypushback arraypushfront
    arraypopback arraypopfront arrayresize arrayslice arraysort arrayreversesort
    arraypartialsort arraypartialreversesort arrayuniq arraydistinct arrayenumerate
    arrayenumerateuniq arrayenumeratedense arrayreverse arrayflatten flatten arraycompact
    arrayzip arrayzipunaligned arraymap arrayfilter arrayfill arrayreversefill arraysplit
    arrayreversesplit arrayexists arrayall arraycount arraysum arrayavg arraymin arraymax
    arrayproduct arraycumsum arraycumsumnonnegative arraydifference arrayfirst
    arrayfirstindex arrayfirstornull arraylast arraylastindex arraylastornull
    arrayintersect arrayunion arrayexcept arraysymmetricdifference arrayjoin arrayrotateleft
    arrayrotateright arrayshiftleft arrayshiftright arrayfold arraytopk arraybottomk
    arraydotproduct arrayjaccardindex arraylevenshteindistance arrayaucpr arrayrocauc
    arrayauc arrayprauc arraywithconstant replicate arrayremove array_remove emptyarraydate
    emptyarraydatetime emptyarrayfloat32 emptyarrayfloat64 emptyarrayint8 emptyarrayint16
    emptyarrayint32 emptyarrayint64 emptyarrayuint8 emptyarrayuint16 emptyarrayuint32
    emptyarrayuint64 emptyarraystring emptyarraytosingle
    map mapkeys mapvalues mapcontains mapcontainskey mapcontainsvalue mapcontainskeylike
    mapcontainsvaluelike mapextractkeylike mapextractvaluelike mapfromarrays map_from_arrays
    mapadd mapsubtract mapapply mapfilter mapexists mapall mapsort mapreversesort
    mappartialsort mappartialreversesort mapconcat mapupdate mappopulateseries
    extractkeyvaluepairs extractkeyvaluepairswithescaping str_to_map mapfromstring tuple
    tupleelement tuplenames flattentuple tupleconcat tupleplus tupleminus tuplemultiply
    tupledivide tuplenegate tuplemultiplybynumber tupledividebynumber tuplehammingdistance
    tupletonamevaluepairs dotproduct
    md4 md5 ripemd160 sha1 sha224 sha256 sha384 sha512 sha512_256 urlhash cityhash64
    farmfingerprint64 farmhash64 gccmurmurhash halfmd5 hivehash inthash32 inthash64 javahash
    javahashutf16le jumpconsistenthash kafkamurmurhash keccak256 metrohash64 murmurhash2_32
    murmurhash2_64 murmurhash3_128 murmurhash3_32 murmurhash3_64 siphash64 siphash128
    siphash64keyed siphash128keyed wyhash64 xxhash32 xxhash64 xxh3 xxh3_128
    bitmasktoarray bitmasktolist bitpositionstoarray generateuuidv4 generateuuidv7
    uuidstringtonum uuidnumtostring uuidtonum uuidv7todatetime ipv4numtostring
    ipv4stringtonum ipv4stringtonumornull ipv4stringtonumordefault ipv4numtostringclassc
    ipv6numtostring ipv6stringtonum ipv6stringtonumornull ipv6stringtonumordefault ipv4toipv6
    ipv4cidrtorange ipv6cidrtorange cutipv6 isipv4string isipv6string isipaddressinrange
    inet_aton inet_ntoa inet6_aton inet6_ntoa macnumtostring macstringtonum macstringtooui
    rand rand32 rand64 randcanonical
    bar formatreadablesize format_bytes formatreadabledecimalsize formatreadablequantity
    formatreadabletimedelta parsereadablesize parsereadablesizeornull
    parsereadablesizeorzero parsetimedelta totypename tocolumntypename transform identity
    materialize countdigits isdecimaloverflow bytesize finalizeaggregation visiblewidth
    columns
""")
    | names(_variants(f"to{_TYPES.replace(' ', ' to')}", "orzero ornull ordefault"))
    | names(
        _variants(
            "jsonextract jsonextractstring jsonextractint jsonextractuint jsonextractfloat"
            " jsonextractbool jsonextractraw jsonextractarrayraw jsonextractkeys"
            " jsonextractkeysandvalues jsonextractkeysandvaluesraw",
            "caseinsensitive",
        )
        + " "
        + _variants(
            "multisearchany multisearchfirstindex multisearchfirstposition"
            " multisearchallpositions ngramdistance ngramsearch",
            "caseinsensitive utf8 caseinsensitiveutf8",
        )
    )
)
ALLOWED_FUNCTIONS = AGGREGATES | SCALARS

# Functions that read the server, the session or other state rather than the query's rows.
# Not on the allow-list; listed so that their names are refused as bare identifiers as well
# (ClickHouse calls current_user, database, ... without parentheses).
SERVER_STATE_FUNCTIONS = names("""
    currentdatabase current_database database schema current_schema currentschemas
    current_schemas currentuser current_user user session_user authenticateduser authuser
    currentroles current_role enabledroles defaultroles currentprofiles enabledprofiles
    defaultprofiles currentqueryid current_query_id queryid query_id initialqueryid
    initial_query_id initialquerystarttime initial_query_start_time currenthandler
    currentrequesturl getclienthttpheader connectionid connection_id hostname fqdn
    fullhostname version revision buildid uptime serveruuid tcpport getserverport
    displayname shardnum shardcount getmacro getsetting getsettingordefault getserversetting
    getmergetreesetting getoskernelversion zookeepersessionuptime filesystemavailable
    filesystemcapacity filesystemunreserved file timezone servertimezone transactionid
    transactionlatestsnapshot transactionoldestsnapshot globalvariable hascolumnintable
    getmaxtablenamelengthfordatabase showcertificate logtrace tid chdb generatesnowflakeid
""")

# table functions that read files, the network, other servers or processes: refused as
# functions, wherever they stand (the others as table functions)
EXTERNAL_FUNCTIONS = names("""
    file filecluster filesystem url urlcluster s3 s3cluster gcs oss cosn hdfs hdfscluster
    azureblobstorage azureblobstoragecluster remote remotesecure cluster clusterallreplicas
    mysql postgresql sqlite mongodb redis jdbc odbc executable python input iceberg
    icebergs3 icebergazure icebergHDFS iceberglocal deltalake deltalakes3 deltalakeazure
    deltalakelocal hudi paimon ytsaurus bigquery arrowstream prometheusquery
    prometheusqueryrange
""")


@functools.lru_cache(maxsize=4096)
def function_allowed(name: str) -> bool:
    """Whether an analyst may call ``name`` (ClickHouse's name; compared lowercased, which is
    safe because no two ClickHouse functions differ only in case unless they are aliases)."""
    lowered = name.lower()
    if len(lowered) > MAX_NAME:
        return False
    return lowered in ALLOWED_FUNCTIONS or _aggregate_allowed(lowered)


def _aggregate_allowed(name: str) -> bool:
    if name in AGGREGATES:
        return True
    return any(
        name.endswith(suffix)
        and len(name) > len(suffix)
        and _aggregate_allowed(name[: -len(suffix)])
        for suffix in AGGREGATE_COMBINATORS
    )
